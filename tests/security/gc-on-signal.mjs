// Loaded into a test server with NODE_OPTIONS="--expose-gc --import <this file>":
// SIGUSR2 runs a full garbage collection, so memory can be measured without GC noise.
process.on("SIGUSR2", () => {
  globalThis.gc?.();
  globalThis.gc?.();
});
