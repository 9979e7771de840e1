// Removes what a build makes, so that a production build starts clean.
const fs = require('fs');
const path = require('path');
const pkg = require('../package.json');
for (const dir of ['lib', 'tsconfig.tsbuildinfo', pkg.jupyterlab.outputDir]) {
  fs.rmSync(path.join(__dirname, '..', dir), { recursive: true, force: true });
}
