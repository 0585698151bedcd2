'use strict';
// ort_eval.js measures ONNX Runtime's inference throughput (CPU provider)
// for bench/run.sh. Usage:
//
//   node ort_eval.js MODULES_DIR MODEL C H W IMAGES BATCH THREADS SPIN
//
// It runs as many batches of BATCH as dcconvert eval does for IMAGES images
// (the last one padded to a full batch, as dcconvert pads it), on random
// inputs prepared before the clock starts, after one warm-up run, with
// THREADS intra-op threads that spin while they wait when SPIN is 1 and
// sleep when it is 0; only session.run is timed. It prints the images per
// second. MODULES_DIR is the node_modules directory holding
// onnxruntime-node.

const path = require('path');

const [modules, model, c, h, w, images, batch, threads, spin] = process.argv.slice(2);
const ort = require(path.join(modules, 'onnxruntime-node'));
ort.env.logLevel = 'error';

(async () => {
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: Number(threads),
    interOpNumThreads: 1,
    logSeverityLevel: 3,
    extra: { session: { intra_op: { allow_spinning: spin } } },
  });
  const b = Number(batch);
  const n = Number(images);
  const dims = [b, Number(c), Number(h), Number(w)];
  const size = dims.reduce((x, y) => x * y, 1);
  const batches = Math.ceil(n / b);
  let seed = 1;
  const feeds = [];
  for (let i = 0; i < Math.min(batches, 8); i++) {
    const data = new Float32Array(size);
    for (let j = 0; j < size; j++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      data[j] = seed / 4294967296;
    }
    feeds.push({ [session.inputNames[0]]: new ort.Tensor('float32', data, dims) });
  }
  await session.run(feeds[0]); // warm-up
  let ns = 0n;
  for (let i = 0; i < batches; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds[i % feeds.length]);
    ns += process.hrtime.bigint() - t0;
  }
  process.stdout.write(`${(n / (Number(ns) / 1e9)).toFixed(1)}\n`);
})().catch((err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
