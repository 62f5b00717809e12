// The piscina worker of bench/node/apply.mjs: returns its input.
// deno-lint-ignore explicit-module-boundary-types
export default (x) => x;
