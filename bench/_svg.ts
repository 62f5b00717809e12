/**
 * Draws the comparison's rows as one SVG bar chart (`docs/bench.svg`, shown
 * by the README above the table): one group per workload, one bar per
 * baseline (Python, or the Node pools where the row has one), the bar's
 * length the ratio "how many times better ours is" on a log scale, labelled,
 * with the 1× line marked and the under-load rows drawn in their own colour.
 * Plain SVG 1.1 with inline attributes only, so it renders in a browser and
 * in GitHub-style Markdown (which strips scripts and styles).
 *
 * @module
 */

import type { Row } from "./_compare_util.ts";

/** One bar: a row's ratio against its baseline. */
interface Bar {
  baseline: string;
  ratio: number;
  loaded: boolean;
}

/** A group of bars: one workload. */
interface Group {
  title: string;
  section: string;
  bars: Bar[];
}

const WIDTH = 960;
const LABEL_W = 430;
const BAR_H = 16;
const GAP = 4;
const GROUP_GAP = 12;
const TOP = 58;
const MIN_RATIO = 0.25;
const MAX_RATIO = 1000;

/**
 * How many times better ours is than the row's baseline (throughput:
 * ours/baseline; latency: baseline/ours), or `null` when the row has no
 * baseline figure.
 *
 * @param r The row.
 * @returns The ratio.
 */
export function rowRatio(r: Row): number | null {
  if (r.python === null || r.python === 0 || r.ours === 0) return null;
  return r.higherIsBetter ? r.ours / r.python : r.python / r.ours;
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * A label that fits: long parenthesised asides (what the baseline ran) go
 * first, then the middle, so rows that differ only at their end stay apart.
 */
function shorten(text: string, max: number): string {
  // An aside (one level of nested parentheses allowed), unless it is short
  // enough to be what tells two rows apart ("(Python: spawn)").
  const aside = /\s*\((?:[^()]|\([^()]*\))*\)/g;
  let t = text.replace(aside, (m) => (m.length > 24 ? "" : m)).trim();
  if (t.length <= max) return t;
  t = t.replace(aside, "").trim();
  if (t.length <= max) return t;
  const head = Math.ceil((max - 1) / 2), tail = max - 1 - head;
  return `${t.slice(0, head)}…${t.slice(t.length - tail)}`;
}

const fmt = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 3 });

/**
 * Renders the rows of one `bench:compare` run.
 *
 * @param rows Each row with its section's title.
 * @param when The run's date, shown in the title.
 * @returns The SVG document.
 */
export function renderBenchSvg(
  rows: Array<[string, Row]>,
  when: Date = new Date(),
): string {
  const groups: Group[] = [];
  const byKey = new Map<string, Group>();
  for (const [section, r] of rows) {
    const ratio = rowRatio(r);
    if (ratio === null) continue;
    const key = `${section}\u0000${r.group ?? r.workload}`;
    let g = byKey.get(key);
    if (!g) {
      g = { title: r.group ?? r.workload, section, bars: [] };
      byKey.set(key, g);
      groups.push(g);
    }
    g.bars.push({
      baseline: r.baseline ?? "Python",
      ratio,
      loaded: /load/i.test(section) || r.workload.startsWith("loaded:"),
    });
  }
  const plotW = WIDTH - LABEL_W - 110;
  const lo = Math.log10(MIN_RATIO), hi = Math.log10(MAX_RATIO);
  const x = (ratio: number) => {
    const v = Math.min(Math.max(ratio, MIN_RATIO), MAX_RATIO);
    return LABEL_W + ((Math.log10(v) - lo) / (hi - lo)) * plotW;
  };
  const parts: string[] = [];
  let y = TOP;
  let lastSection = "";
  for (const g of groups) {
    if (g.section !== lastSection) {
      parts.push(
        `<text x="8" y="${
          y + 12
        }" font-size="13" font-weight="bold" fill="#222">${
          escapeXml(g.section)
        }</text>`,
      );
      y += 20;
      lastSection = g.section;
    }
    const groupH = g.bars.length * (BAR_H + GAP) - GAP;
    parts.push(
      `<text x="${LABEL_W - 8}" y="${
        y + groupH / 2 + 4
      }" font-size="12" text-anchor="end" fill="#222">${
        escapeXml(shorten(g.title, 64))
      }</text>`,
    );
    for (const b of g.bars) {
      const x0 = x(1), x1 = x(b.ratio);
      const better = b.ratio >= 1;
      const fill = b.loaded
        ? (better ? "#8e44ad" : "#c39bd3")
        : (better ? "#2e86c1" : "#e67e22");
      const left = Math.min(x0, x1), w = Math.max(1, Math.abs(x1 - x0));
      parts.push(
        `<rect x="${left.toFixed(1)}" y="${y}" width="${
          w.toFixed(1)
        }" height="${BAR_H}" fill="${fill}"><title>${
          escapeXml(`${g.title}: ${fmt.format(b.ratio)}× vs ${b.baseline}`)
        }</title></rect>`,
      );
      const label = `${fmt.format(b.ratio)}× vs ${b.baseline}${
        b.loaded ? " (under load)" : ""
      }`;
      parts.push(
        `<text x="${(Math.max(x0, x1) + 4).toFixed(1)}" y="${
          y + BAR_H - 4
        }" font-size="11" fill="#222">${escapeXml(label)}</text>`,
      );
      y += BAR_H + GAP;
    }
    y += GROUP_GAP - GAP;
  }
  const height = y + 30;
  const ticks = [0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
  const axis = ticks.map((t) =>
    `<line x1="${x(t).toFixed(1)}" y1="${TOP - 6}" x2="${
      x(t).toFixed(1)
    }" y2="${y}" stroke="${t === 1 ? "#333" : "#ddd"}" stroke-width="${
      t === 1 ? 1.5 : 1
    }"/><text x="${x(t).toFixed(1)}" y="${
      TOP - 10
    }" font-size="10" text-anchor="middle" fill="#555">${t}×</text>`
  );
  const title =
    `deno-multiprocessing vs Python's multiprocessing (and Node pools): times better, log scale — ${
      when.toISOString().slice(0, 10)
    }`;
  const legend = [
    ["#2e86c1", "ours better"],
    ["#e67e22", "baseline better"],
    ["#8e44ad", "under load (a CPU hog beside)"],
  ].map(([c, t], i) =>
    `<rect x="${8 + i * 220}" y="${
      height - 20
    }" width="12" height="12" fill="${c}"/><text x="${24 + i * 220}" y="${
      height - 10
    }" font-size="11" fill="#222">${t}</text>`
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    `<text x="8" y="20" font-size="15" font-weight="bold" fill="#111">${
      escapeXml(title)
    }</text>`,
    ...axis,
    ...parts,
    ...legend,
    `</svg>`,
    "",
  ].join("\n");
}
