// Node 20 lacks Promise.withResolvers (Node 22+), which matrix-js-sdk >= 37.6
// uses in its sync loop: without it the sync aborts right after PREPARED
// ("Promise.withResolvers is not a function") and no later event arrives.
// Imported before the SDK (docs/design/e2ee.md §4).
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
