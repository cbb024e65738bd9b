#!/usr/bin/env node
// Checks recorded HTTP exchanges against services-demo/<service>/openapi.yaml.
//
//   node validate-openapi.js <exchanges.jsonl>
//
// One exchange per line:
//   {"service", "method", "path", "status", "content_type", "headers", "body"}
// Prints TAP: first one point per OpenAPI document (is it a usable 3.1
// document?), then one per exchange. Exit 0 iff every point is ok.
'use strict';

const fs = require('fs');
const path = require('path');
const YAML = require('yaml');
const Ajv2020 = require('ajv/dist/2020').default;
const addFormats = require('ajv-formats').default;

const SRCDIR = process.env.SLUICE_SRCDIR || path.resolve(__dirname, '..', '..', '..');
const SERVICES_DIR = path.join(SRCDIR, 'services-demo');
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

// strictTypes is off because the documents narrow shared schemas with
// allOf members that only carry `properties` (no `type`), which is fine.
// Other strict checks stay on: an unknown keyword or format is a typo.
function newAjv() {
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, logger: false });
  addFormats(ajv);
  // OpenAPI's own annotation keywords inside Schema Objects, and the fields
  // of the OpenAPI Object, since a whole document is added as one schema.
  for (const k of ['example', 'discriminator', 'xml', 'externalDocs', 'openapi', 'info', 'jsonSchemaDialect',
    'servers', 'paths', 'webhooks', 'components', 'security', 'tags']) ajv.addKeyword(k);
  return ajv;
}

// JSON Pointer (RFC 6901) helpers.
const esc = (s) => String(s).replace(/~/g, '~0').replace(/\//g, '~1');
function deref(doc, ref) {
  if (!ref.startsWith('#')) return undefined; // documents are self-contained
  let node = doc;
  for (const raw of ref.slice(1).split('/').slice(1)) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || !(key in node)) return undefined;
    node = node[key];
  }
  return node;
}

// Follows a Reference Object; returns [object, its pointer] or throws.
function follow(doc, node, pointer) {
  for (let hops = 0; node && typeof node.$ref === 'string'; hops++) {
    if (hops > 10) throw new Error(`$ref loop at ${pointer}`);
    pointer = node.$ref.slice(1);
    node = deref(doc, node.$ref);
  }
  if (node === undefined) throw new Error(`unresolved $ref to ${pointer}`);
  return [node, pointer];
}

// Structural check of one document: the OpenAPI 3.1 skeleton, every $ref
// resolves, and every schema in it compiles (catches bad regexes, unknown
// formats and keywords).
function checkDocument(doc, ajv, id) {
  const problems = [];
  if (!doc || typeof doc !== 'object') return ['not a YAML mapping'];
  if (typeof doc.openapi !== 'string' || !/^3\.1\.\d+$/.test(doc.openapi)) problems.push(`openapi is ${JSON.stringify(doc.openapi)}, not 3.1.x`);
  if (!doc.info || typeof doc.info.title !== 'string' || typeof doc.info.version !== 'string') problems.push('info.title and info.version must be strings');
  if (!doc.paths || typeof doc.paths !== 'object') problems.push('no paths object');
  for (const p of Object.keys(doc.paths || {})) {
    if (!p.startsWith('/')) problems.push(`path ${p} does not start with /`);
    for (const m of METHODS) {
      const op = doc.paths[p][m];
      if (op && (!op.responses || Object.keys(op.responses).length === 0)) problems.push(`${m.toUpperCase()} ${p} has no responses`);
    }
  }
  (function walk(node, ptr) {
    if (Array.isArray(node)) return node.forEach((v, i) => walk(v, `${ptr}/${i}`));
    if (!node || typeof node !== 'object') return;
    if (typeof node.$ref === 'string' && deref(doc, node.$ref) === undefined) problems.push(`${ptr}: $ref ${node.$ref} does not resolve`);
    if (node.schema && typeof node.schema === 'object') compileAt(`${ptr}/schema`);
    for (const [k, v] of Object.entries(node)) walk(v, `${ptr}/${esc(k)}`);
  })(doc, '');
  for (const name of Object.keys((doc.components && doc.components.schemas) || {})) compileAt(`/components/schemas/${esc(name)}`);
  return problems;

  function compileAt(ptr) {
    try {
      ajv.compile({ $ref: `${id}#${ptr}` });
    } catch (e) {
      problems.push(`${ptr}: ${e.message}`);
    }
  }
}

// The path item for a concrete path: literal templates win over templated
// ones (OpenAPI's rule), then the one with fewer parameters.
function matchPath(doc, concrete) {
  const candidates = [];
  for (const tpl of Object.keys(doc.paths || {})) {
    const re = new RegExp('^' + tpl.split(/(\{[^}]+\})/).map((part) =>
      part.startsWith('{') ? '[^/]+' : part.replace(/[.*+?^$()|[\]\\]/g, '\\$&')).join('') + '$');
    if (re.test(concrete)) candidates.push(tpl);
  }
  const params = (t) => (t.match(/\{/g) || []).length;
  candidates.sort((a, b) => params(a) - params(b));
  return candidates[0];
}

function loadDocuments(tap, ajv) {
  const docs = {};
  let names = [];
  try {
    names = fs.readdirSync(SERVICES_DIR).filter((n) => fs.existsSync(path.join(SERVICES_DIR, n, 'openapi.yaml'))).sort();
  } catch (e) {
    tap(false, `openapi documents in ${SERVICES_DIR}`, [e.message]);
  }
  // More documents under names of their own: OPENAPI_EXTRA_DOCS="seed=/path/a.yaml,..."
  // (exchanges recorded with service "seed" are checked against that one)
  const extra = {};
  for (const item of (process.env.OPENAPI_EXTRA_DOCS || '').split(',').filter(Boolean)) {
    const eq = item.indexOf('=');
    extra[item.slice(0, eq)] = item.slice(eq + 1);
    names.push(item.slice(0, eq));
  }
  for (const name of names) {
    const file = extra[name] || path.join(SERVICES_DIR, name, 'openapi.yaml');
    const id = `urn:sluice:openapi:${name}`;
    let problems;
    try {
      const doc = YAML.parse(fs.readFileSync(file, 'utf8'), { prettyErrors: true });
      // The whole document is one schema resource, so that `$ref`s inside
      // schemas (#/components/schemas/...) resolve against it.
      ajv.addSchema(doc, id);
      problems = checkDocument(doc, ajv, id);
      if (problems.length === 0) docs[name] = { doc, id };
    } catch (e) {
      problems = [e.message];
    }
    tap(problems.length === 0, `openapi ${extra[name] ? file : name + '/openapi.yaml'} is an OpenAPI 3.1 document`, problems);
  }
  return docs;
}

const mediaType = (ct) => String(ct || '').split(';')[0].trim().toLowerCase();
const isEmpty = (body) => body === null || body === undefined || body === '';

// Returns a list of problems (empty when the exchange conforms).
function checkExchange(ex, docs, ajv) {
  const entry = docs[ex.service];
  if (!entry) return [`no valid OpenAPI document for service ${JSON.stringify(ex.service)}`];
  const { doc, id } = entry;
  const concrete = String(ex.path || '').split('?')[0];
  const tpl = matchPath(doc, concrete);
  if (!tpl) return [`path ${concrete} is not documented`];
  const method = String(ex.method || '').toLowerCase();
  const status = String(ex.status);
  const item = doc.paths[tpl];

  let response, ptr;
  const basePtr = `/paths/${esc(tpl)}/${method}/responses`;
  if (item[method]) {
    const responses = item[method].responses || {};
    // Exact code first, then its range (4XX), then default.
    const key = [status, `${status[0]}XX`, 'default'].find((k) => k in responses);
    if (!key) return [`${method.toUpperCase()} ${tpl} does not document status ${status}`];
    [response, ptr] = follow(doc, responses[key], `${basePtr}/${esc(key)}`);
  } else if (status === '405' && doc.components && doc.components.responses && doc.components.responses.MethodNotAllowed) {
    // A method the path does not have cannot be an operation; the
    // documents describe that answer once, in components.
    [response, ptr] = follow(doc, { $ref: '#/components/responses/MethodNotAllowed' }, '');
  } else {
    return [`${method.toUpperCase()} ${tpl} is not documented`];
  }

  const problems = [];
  const headers = {};
  for (const [k, v] of Object.entries(ex.headers || {})) headers[k.toLowerCase()] = v;
  for (const [name, h0] of Object.entries(response.headers || {})) {
    const [h, hptr] = follow(doc, h0, `${ptr}/headers/${esc(name)}`);
    const value = headers[name.toLowerCase()];
    if (value === undefined) {
      if (h.required) problems.push(`missing required header ${name}`);
    } else if (h.schema) {
      const v = ajv.compile({ $ref: `${id}#${hptr}/schema` });
      if (!v(value)) problems.push(...v.errors.map((e) => `header ${name}: ${e.instancePath} ${e.message}`));
    }
  }

  const content = response.content || {};
  const declared = Object.keys(content);
  const got = mediaType(ex.content_type);
  if (declared.length === 0) {
    if (!isEmpty(ex.body)) problems.push(`response ${status} declares no content, got a body`);
    return problems;
  }
  const match = declared.find((d) => d.toLowerCase() === got) ||
    declared.find((d) => d.endsWith('/*') && got.startsWith(d.slice(0, -1).toLowerCase())) ||
    declared.find((d) => d === '*/*');
  if (!match) return problems.concat([`content type ${JSON.stringify(ex.content_type)} is not one of ${declared.join(', ')}`]);
  if (content[match].schema) {
    const validate = ajv.compile({ $ref: `${id}#${ptr}/content/${esc(match)}/schema` });
    if (!validate(ex.body === undefined ? null : ex.body)) {
      problems.push(...validate.errors.map((e) => `body${e.instancePath} ${e.message} (${e.schemaPath}${e.params && Object.keys(e.params).length ? ' ' + JSON.stringify(e.params) : ''})`));
    }
  }
  return problems;
}

function main() {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node validate-openapi.js <exchanges.jsonl>');
    process.exit(2);
  }
  // Points are buffered because the plan line (1..N) comes first.
  const points = [];
  const tap = (ok, desc, notes) => points.push({ ok, desc, notes: notes || [] });
  const ajv = newAjv();
  const docs = loadDocuments(tap, ajv);

  const lines = fs.readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let ex;
    try {
      ex = JSON.parse(line);
    } catch (e) {
      return tap(false, `${file}:${i + 1} is not JSON`, [e.message]);
    }
    const desc = `${ex.service} ${ex.method} ${ex.path} ${ex.status}`;
    let problems;
    try {
      problems = checkExchange(ex, docs, ajv);
    } catch (e) {
      problems = [e.message];
    }
    tap(problems.length === 0, desc, problems);
  });

  console.log(`1..${points.length}`);
  points.forEach((p, i) => {
    console.log(`${p.ok ? 'ok' : 'not ok'} ${i + 1} - ${p.desc.replace(/#/g, '\\#')}`);
    for (const n of p.notes) console.log(`# ${String(n).replace(/\n/g, '\n# ')}`);
  });
  process.exit(points.every((p) => p.ok) ? 0 : 1);
}

main();
