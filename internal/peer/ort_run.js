'use strict';
// ort_run.js runs one ONNX model in ONNX Runtime for Node on the CPU
// provider, for the Go package peer. Usage:
//
//   node ort_run.js MODULES_DIR version
//       prints {"version": "..."} for the onnxruntime-node under MODULES_DIR
//   node ort_run.js MODULES_DIR run REQUEST_JSON
//       runs the request and writes DIR/response.json beside it
//
// REQUEST_JSON: {"model": PATH, "inputs": [{"name", "dims", "file"}]}, where
// each file holds the tensor's float32 values, little-endian. The response
// lists every graph output as {"name", "type", "dims", "file"} with its values
// written the same way (other numeric types converted to float32). On failure
// the message goes to stderr and the exit status is 1.

const fs = require('fs');
const os = require('os');
const path = require('path');

function readFloat32(file, count) {
  const buf = fs.readFileSync(file);
  if (buf.length !== 4 * count) {
    throw new Error(`${file}: ${buf.length} bytes, want ${4 * count}`);
  }
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    out[i] = buf.readFloatLE(4 * i);
  }
  return out;
}

function writeFloat32(file, values) {
  const buf = Buffer.alloc(4 * values.length);
  for (let i = 0; i < values.length; i++) {
    buf.writeFloatLE(Number(values[i]), 4 * i);
  }
  fs.writeFileSync(file, buf);
}

const numeric = new Set([
  'float32', 'float64', 'float16', 'int8', 'uint8', 'int16', 'uint16',
  'int32', 'uint32', 'int64', 'uint64', 'bool',
]);

async function run(ort, requestPath) {
  const dir = path.dirname(requestPath);
  const req = JSON.parse(fs.readFileSync(requestPath, 'utf8'));
  const session = await ort.InferenceSession.create(req.model, {
    executionProviders: ['cpu'],
    logSeverityLevel: 3,
  });
  const feeds = {};
  for (const input of req.inputs) {
    const count = input.dims.reduce((a, b) => a * b, 1);
    const data = readFloat32(path.join(dir, input.file), count);
    feeds[input.name] = new ort.Tensor('float32', data, input.dims);
  }
  const results = await session.run(feeds);
  const outputs = [];
  for (const [i, name] of session.outputNames.entries()) {
    const t = results[name];
    if (!numeric.has(t.type)) {
      throw new Error(`output ${JSON.stringify(name)} has type ${t.type}, not a number type`);
    }
    const file = `out_${i}.bin`;
    writeFloat32(path.join(dir, file), t.data);
    outputs.push({ name, type: t.type, dims: t.dims.map(Number), file });
  }
  fs.writeFileSync(path.join(dir, 'response.json'), JSON.stringify({ outputs }));
}

async function main() {
  if (os.endianness() !== 'LE') {
    throw new Error('this script exchanges little-endian float32 and needs a little-endian machine');
  }
  const [modulesDir, mode, requestPath] = process.argv.slice(2);
  const ort = require(path.join(modulesDir, 'onnxruntime-node'));
  ort.env.logLevel = 'error';
  switch (mode) {
    case 'version':
      process.stdout.write(JSON.stringify({ version: ort.env.versions.node }) + '\n');
      return;
    case 'run':
      await run(ort, requestPath);
      return;
    default:
      throw new Error(`unknown mode ${JSON.stringify(mode)}`);
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${err && err.message ? err.message : err}\n`);
    process.exit(1);
  },
);
