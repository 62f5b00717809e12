/**
 * `deno task bench:compare`: runs each pattern's workloads in Deno and, when
 * `python3` is installed, the same workloads with Python's
 * `multiprocessing`, in the same run, and prints the figures side by side
 * with their ratio. Without Python the Python column reads "skipped".
 *
 * `--only <title words>` runs the sections whose title contains the words;
 * `--markdown` prints the table as Markdown (for the README). A full run
 * (no `--only`) also draws the figures as `docs/bench.svg` (`--svg PATH`
 * elsewhere, `--svg ""` not at all).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { findPython, type Row } from "./_compare_util.ts";
import { renderBenchSvg } from "./_svg.ts";
import { section as cube } from "./compare_cube.ts";
import { section as channels } from "./compare_channels.ts";
import { section as manager } from "./compare_manager.ts";
import { section as shared } from "./compare_shared.ts";
import { section as load } from "./compare_load.ts";
import { section as broker } from "./compare_broker.ts";

const sections = [cube, shared, channels, manager, broker, load];

const { values } = parseArgs({
  args: Deno.args,
  options: {
    only: { type: "string" },
    markdown: { type: "boolean" },
    svg: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "Usage: deno task bench:compare [--only WORDS] [--markdown]\n\n" +
      "Runs the benchmarks side by side with Python's multiprocessing and prints ratios.",
  );
  Deno.exit(0);
}

const fmt = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 3 });
function show(n: number | null, unit: string): string {
  if (n === null) return "skipped";
  return `${fmt.format(n)} ${unit}`;
}
function ratio(r: Row): string {
  if (r.python === null || r.python === 0) return "–";
  const x = r.higherIsBetter ? r.ours / r.python : r.python / r.ours;
  return `${fmt.format(x)}×`;
}

const python = await findPython();
if (!python) console.log("python3 not found: Python figures are skipped");
const rows: Array<[string, Row]> = [];
for (const s of sections) {
  if (
    values.only && !s.title.toLowerCase().includes(values.only.toLowerCase())
  ) {
    continue;
  }
  console.error(`running: ${s.title}`);
  for (const r of await s.run(python)) {
    rows.push([s.title, r]);
    console.error(
      `  ${r.workload}: ours ${show(r.ours, r.unit)}, Python ${
        show(r.python, r.unit)
      } (${ratio(r)} ${r.higherIsBetter ? "higher" : "lower"} is better)`,
    );
  }
}

const header = [
  "section",
  "workload",
  "ours",
  "Python",
  "ours vs Python",
  "target",
];
const table = rows.map(([t, r]) => [
  t,
  r.workload,
  show(r.ours, r.unit),
  show(r.python, r.unit),
  ratio(r),
  r.target ?? "",
]);
if (values.markdown) {
  console.log(`| ${header.join(" | ")} |`);
  console.log(`| ${header.map(() => "---").join(" | ")} |`);
  for (const row of table) console.log(`| ${row.join(" | ")} |`);
} else {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...table.map((r) => r[i]!.length))
  );
  const line = (cells: string[]) =>
    cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  console.log(line(header));
  for (const row of table) console.log(line(row));
}
console.log(
  "\n'ours vs Python' is how many times better ours is (throughput: ours/Python; latency: Python/ours), measured in this run.",
);

const svgPath = values.svg ??
  (values.only ? "" : new URL("../docs/bench.svg", import.meta.url).pathname);
if (svgPath) {
  await Deno.writeTextFile(svgPath, renderBenchSvg(rows));
  console.log(`chart written to ${svgPath}`);
}
