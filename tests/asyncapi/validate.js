// Parses openapi/asyncapi.yaml, the MQTT contract, with the AsyncAPI project's own parser, so
// that a document other AsyncAPI tools would refuse or warn about fails CI; then checks that
// every message example matches its payload schema and that the schemas refuse what the
// server refuses (refused-payloads.json). The parser checks neither for AsyncAPI 3. That the
// server's own parsers take the examples and refuse the same payloads is tests/api/asyncapi.rs.
'use strict';

const path = require('node:path');
const { Parser, fromFile } = require('@asyncapi/parser');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');

const DOCUMENT = path.resolve(__dirname, '../../openapi/asyncapi.yaml');
const REFUSED = require('./refused-payloads.json');

// Spectral's severities: 0 error, 1 warning, 2 information, 3 hint.
const SEVERITY = ['error', 'warning', 'info', 'hint'];

/**
 * Checks each message's examples (which must be there) and refused payloads against its payload
 * schema; returns the number of failures, each printed.
 */
function checkPayloads(document) {
  // The AsyncAPI schema format is JSON Schema draft 07 with a few more keywords; the parser's
  // own `x-parser-*` annotations are not keywords.
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  let failures = 0;
  let checked = 0;
  for (const message of document.messages().all()) {
    const name = message.name();
    const validate = ajv.compile(message.payload().json());
    const examples = message.examples().all();
    if (examples.length === 0) {
      console.log(`error: message ${name} has no examples`);
      failures += 1;
    }
    for (const example of examples) {
      checked += 1;
      if (!validate(example.payload())) {
        console.log(`error: example ${example.name()} of message ${name} does not match its schema:`);
        console.log(`  ${ajv.errorsText(validate.errors)}`);
        failures += 1;
      }
    }
    for (const { why, payload } of REFUSED[name] ?? []) {
      checked += 1;
      if (validate(payload)) {
        console.log(`error: the schema of message ${name} takes a payload the server refuses (${why}):`);
        console.log(`  ${JSON.stringify(payload)}`);
        failures += 1;
      }
    }
  }
  const known = new Set(document.messages().all().map((message) => message.name()));
  for (const name of Object.keys(REFUSED).filter((key) => !key.startsWith('_'))) {
    if (!known.has(name)) {
      console.log(`error: refused-payloads.json names message ${name}, which the document lacks`);
      failures += 1;
    }
  }
  console.log(`${checked} example and refused payloads checked against their schemas`);
  return failures;
}

async function main() {
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, DOCUMENT).parse();
  let failures = 0;
  for (const diagnostic of diagnostics) {
    const severity = SEVERITY[diagnostic.severity] ?? String(diagnostic.severity);
    const where = diagnostic.path.length ? diagnostic.path.join('.') : '(document)';
    const line = diagnostic.range ? diagnostic.range.start.line + 1 : '?';
    // Errors and warnings fail; information and hints (such as a newer AsyncAPI version
    // being out) are shown.
    if (diagnostic.severity <= 1) failures += 1;
    console.log(`${severity} ${diagnostic.code} at line ${line}, ${where}: ${diagnostic.message}`);
  }
  if (!document) {
    console.error(`${DOCUMENT} could not be parsed`);
    process.exit(1);
  }
  failures += checkPayloads(document);
  const count = (collection) => collection.all().length;
  console.log(
    `openapi/asyncapi.yaml: AsyncAPI ${document.version()}, ${count(document.channels())} channels, ` +
      `${count(document.operations())} operations, ${count(document.messages())} messages; ` +
      `${diagnostics.length} diagnostics; ${failures} failures`,
  );
  if (failures > 0) process.exit(1);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
