#!/usr/bin/env node
// A second-language client of crossgrad's wire API: the seed notebook's example 2, sin(x**2) at
// x = 4, from Node.js, with nothing but the .proto file and @grpc/grpc-js.
//
//     node tests/node/client.js 127.0.0.1:PORT
//
// It creates a session, puts the leaf x = 4.0 (float32, raw little-endian bytes, requires_grad),
// runs Backward of the graph x -> pow(x, 2) -> sin, reads the leaf's grad back with GetLeaf, and
// calls the stateless Differentiate with the formula "sin(x**2)" and x in the `values` form
// (repeated double), as a hand-written client would send it. It prints one JSON line:
//
//     {"grad": 8*cos(16) as float32, "closed_form": "2*x*cos(x**2)",
//      "check_status": "CHECK_STATUS_AGREE", ...}
//
// and exits non-zero on any error (a gRPC status, an unexpected answer). tests/server/
// test_node_client.py runs it against a real server.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const PROTO_FILE = 'crossgrad/v1/crossgrad.proto';
const DEADLINE_MS = 60_000; // per call: the first Backward derives the closed form

// d/dx sin(x**2) = 2*x*cos(x**2): the grad at x = 4 is 8*cos(16).
const X = 4.0;

function loadService() {
  const definition = protoLoader.loadSync(PROTO_FILE, {
    keepCase: true, // field names as in the .proto (session_id, requires_grad)
    longs: String, // int64 (shapes, versions) as decimal strings: no precision lost
    enums: String, // enum values by name ("DTYPE_FLOAT32")
    defaults: true, // absent fields with their default values
    oneofs: true, // a virtual field naming the set member of each oneof
    // crossgrad/v1/crossgrad.proto is found under proto/; google/protobuf/{duration,timestamp}
    // resolve to the well-known types protobufjs (proto-loader's parser) ships.
    includeDirs: [PROTO_ROOT],
  });
  const pkg = grpc.loadPackageDefinition(definition);
  return pkg.crossgrad.v1.AutogradService;
}

// One unary call as a promise, with a deadline.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, { deadline }, (err, response) => {
      if (err) {
        const what = `${method} failed: ${grpc.status[err.code] || err.code}: ${err.details}`;
        reject(new Error(what));
      } else {
        resolve(response);
      }
    });
  });
}

// A float32 scalar as the wire's Tensor: shape [] (0-d), raw little-endian bytes.
function float32Scalar(value) {
  const data = Buffer.alloc(4);
  data.writeFloatLE(value, 0);
  return { shape: [], dtype: 'DTYPE_FLOAT32', data };
}

// A Python int as the wire's 0-d INT64 constant (the seed writes `x ** 2`: an int exponent).
function int64Scalar(value) {
  const data = Buffer.alloc(8);
  data.writeBigInt64LE(BigInt(value), 0);
  return { shape: [], dtype: 'DTYPE_INT64', data };
}

// The elements of a Tensor the server sent (always in `data`), as JavaScript numbers.
function decode(tensor, what) {
  if (!tensor) throw new Error(`${what}: no tensor (None)`);
  const data = tensor.data;
  const read = {
    DTYPE_FLOAT32: [4, (i) => data.readFloatLE(i)],
    DTYPE_FLOAT64: [8, (i) => data.readDoubleLE(i)],
  }[tensor.dtype];
  if (!read) throw new Error(`${what}: unexpected dtype ${tensor.dtype}`);
  const [size, get] = read;
  const count = tensor.shape.reduce((n, d) => n * Number(d), 1);
  if (data.length !== count * size) {
    throw new Error(`${what}: ${data.length} bytes for shape [${tensor.shape}] ${tensor.dtype}`);
  }
  return Array.from({ length: count }, (_, k) => get(k * size));
}

// The 0-d value of a Tensor.
function scalar(tensor, what) {
  if (tensor && tensor.shape.length !== 0) {
    throw new Error(`${what}: expected a 0-d tensor, got shape [${tensor.shape}]`);
  }
  return decode(tensor, what)[0];
}

async function main(address) {
  const Service = loadService();
  const client = new Service(address, grpc.credentials.createInsecure());
  try {
    const created = await call(client, 'CreateSession', {});
    const sessionId = created.session.id;
    let failed = true;
    try {
      await call(client, 'PutLeaf', {
        session_id: sessionId,
        name: 'x',
        value: float32Scalar(X),
        requires_grad: true,
      });

      // z = sin(x ** 2), the seed's example 2, as a graph of nodes.
      const graph = {
        nodes: [
          { id: 'x', leaf: 'x' },
          { id: 'two', constant: int64Scalar(2) },
          { id: 'pow', op: { op: 'pow', inputs: ['x', 'two'] } },
          { id: 'sin', op: { op: 'sin', inputs: ['pow'] } },
        ],
        output: 'sin',
      };
      const backward = await call(client, 'Backward', { session_id: sessionId, graph });
      const leafGrads = backward.leaves.filter((leaf) => leaf.name === 'x');
      if (leafGrads.length !== 1) {
        throw new Error(`Backward: expected leaf x in the answer, got ${JSON.stringify(
          backward.leaves.map((leaf) => leaf.name))}`);
      }

      const got = await call(client, 'GetLeaf', { session_id: sessionId, name: 'x' });
      if (!got.leaf.requires_grad) throw new Error('GetLeaf: x does not require grad');

      // The stateless call, with x in the `values` form: dtype unspecified means float32.
      const differentiated = await call(client, 'Differentiate', {
        formula: 'sin(x**2)',
        values: { x: { shape: [], values: [X] } },
      });
      const gradients = differentiated.gradients.filter((g) => g.leaf === 'x');
      if (gradients.length !== 1) throw new Error('Differentiate: no gradient for x');

      const result = {
        grad: scalar(got.leaf.grad, 'GetLeaf x.grad'),
        grad_dtype: got.leaf.grad.dtype,
        closed_form: gradients[0].closed_form,
        check_status: differentiated.check.status,
        check_method: differentiated.check.method,
        differentiate_grad: scalar(gradients[0].value, 'Differentiate gradient of x'),
        differentiate_output: scalar(differentiated.output, 'Differentiate output'),
        backward_grad: scalar(leafGrads[0].grad, 'Backward x.grad'),
        backward_output: scalar(backward.output, 'Backward output'),
        backward_closed_form: leafGrads[0].closed_form,
        backward_check_status: backward.check.status,
        backward_version: leafGrads[0].version,
        leaf_version: got.leaf.version,
      };
      process.stdout.write(`${JSON.stringify(result)}\n`);
      failed = false;
    } finally {
      // Best effort after a failure: the first error is the one to report.
      await call(client, 'DeleteSession', { session_id: sessionId }).catch((err) => {
        if (!failed) throw err;
      });
    }
  } finally {
    client.close();
  }
}

if (require.main === module) {
  const address = process.argv[2];
  if (!address) {
    process.stderr.write('usage: node client.js HOST:PORT\n');
    process.exit(2);
  }
  main(address).catch((err) => {
    process.stderr.write(`client.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
}
