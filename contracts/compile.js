#!/usr/bin/env node
// Compiles every contract under contracts/src and contracts/test with the
// pinned solc-js and OpenZeppelin Contracts (package.json, package-lock.json)
// through the standard-JSON interface, so the
// EVM version can be set: "paris", because a Clique chain (no Shanghai)
// rejects the PUSH0 opcode that newer defaults emit.
//
//   node contracts/compile.js           write contracts/build/<Name>.json
//   node contracts/compile.js --check   exit 1 when build/ differs from a fresh compile
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("./node_modules/solc");

const ROOT = __dirname;
const SOURCE_DIRS = ["src", "test"];
const BUILD_DIR = path.join(ROOT, "build");
const EVM_VERSION = "paris";

function sources() {
  const found = {};
  for (const dir of SOURCE_DIRS) {
    const full = path.join(ROOT, dir);
    if (!fs.existsSync(full)) continue;
    for (const name of fs.readdirSync(full).sort()) {
      if (name.endsWith(".sol")) {
        found[`${dir}/${name}`] = { content: fs.readFileSync(path.join(full, name), "utf8") };
      }
    }
  }
  return found;
}

// Imports resolve inside contracts/ only: a package import such as
// "@openzeppelin/contracts/access/AccessControl.sol" is read from the pinned copy in
// node_modules (package-lock.json), everything else relative to contracts/.
function findImport(importPath) {
  const base = importPath.startsWith("@") ? path.join(ROOT, "node_modules") : ROOT;
  const full = path.join(base, importPath);
  if (!full.startsWith(ROOT + path.sep) || !fs.existsSync(full)) {
    return { error: `import not found inside contracts/: ${importPath}` };
  }
  return { contents: fs.readFileSync(full, "utf8") };
}

function compile() {
  const input = {
    language: "Solidity",
    sources: sources(),
    settings: {
      evmVersion: EVM_VERSION,
      optimizer: { enabled: true, runs: 200 },
      outputSelection: {
        "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
      },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const message of output.errors || []) process.stderr.write(message.formattedMessage);
  if (errors.length) process.exit(1);

  const artefacts = {};
  for (const [sourceName, contracts] of Object.entries(output.contracts || {})) {
    if (!SOURCE_DIRS.some((dir) => sourceName.startsWith(`${dir}/`))) continue; // imported libraries
    for (const [contractName, compiled] of Object.entries(contracts)) {
      if (!compiled.evm.bytecode.object) continue; // interfaces and abstract contracts
      artefacts[`${contractName}.json`] =
        JSON.stringify(
          {
            contractName,
            sourceName,
            compiler: `solc-js ${solc.version()}`,
            evmVersion: EVM_VERSION,
            abi: compiled.abi,
            bytecode: "0x" + compiled.evm.bytecode.object,
            deployedBytecode: "0x" + compiled.evm.deployedBytecode.object,
          },
          null,
          2,
        ) + "\n";
    }
  }
  return artefacts;
}

function main() {
  const check = process.argv.includes("--check");
  const artefacts = compile();
  const existing = fs.existsSync(BUILD_DIR)
    ? fs.readdirSync(BUILD_DIR).filter((n) => n.endsWith(".json"))
    : [];
  if (check) {
    const drift = [];
    for (const [name, text] of Object.entries(artefacts)) {
      const file = path.join(BUILD_DIR, name);
      if (!fs.existsSync(file)) drift.push(`missing  build/${name}`);
      else if (fs.readFileSync(file, "utf8") !== text) drift.push(`stale    build/${name}`);
    }
    for (const name of existing) {
      if (!(name in artefacts)) drift.push(`orphan   build/${name}`);
    }
    if (drift.length) {
      process.stderr.write(
        "contract artefacts differ from the sources; run `make contracts` and commit:\n  " +
          drift.join("\n  ") + "\n",
      );
      process.exit(1);
    }
    console.log(`contract artefacts up to date (${Object.keys(artefacts).length} contracts)`);
    return;
  }
  fs.mkdirSync(BUILD_DIR, { recursive: true });
  for (const name of existing) {
    if (!(name in artefacts)) fs.unlinkSync(path.join(BUILD_DIR, name));
  }
  for (const [name, text] of Object.entries(artefacts)) {
    fs.writeFileSync(path.join(BUILD_DIR, name), text);
  }
  console.log(`compiled ${Object.keys(artefacts).length} contracts into contracts/build/ (evm ${EVM_VERSION})`);
}

main();
