// Writes the hash of the sources into the built folder (sources.sha256). A pytest test
// (tests/test_labextension_build.py) recomputes it: the committed assets must match the sources.
// tests/test_labextension_build.py walks and hashes the same way; keep them equal.
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const pkg = require('../package.json');
const INPUTS = ['package.json', 'package-lock.json', 'tsconfig.json', 'src', 'style'];

function files(rel) {
  const full = path.join(root, rel);
  if (fs.statSync(full).isDirectory()) {
    return fs.readdirSync(full).sort().flatMap(name => files(path.posix.join(rel, name)));
  }
  return [rel];
}

const hash = crypto.createHash('sha256');
for (const rel of INPUTS.flatMap(files).sort()) {
  hash.update(rel + '\0');
  hash.update(fs.readFileSync(path.join(root, rel)));
  hash.update('\0');
}
const out = path.join(root, pkg.jupyterlab.outputDir, 'sources.sha256');
fs.writeFileSync(out, hash.digest('hex') + '\n');
console.log(`wrote ${out}`);
