// Compile contracts/safe/SafeLike.sol with solc-js (offline: the compiler ships in the npm
// package installed by contracts/package.json) and write contracts/safe/SafeLike.json, the ABI
// and bytecode irctl's Safe tests and drills deploy on the local chain.
// Rebuild with: make -C contracts node_modules/.package-lock.json && node contracts/safe/build.mjs
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", "package.json"));
const solc = require("solc");

const input = {
  language: "Solidity",
  sources: { "SafeLike.sol": { content: readFileSync(join(here, "SafeLike.sol"), "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "paris",
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const result = JSON.parse(solc.compile(JSON.stringify(input)));
for (const e of result.errors || []) console.error(e.formattedMessage);
if ((result.errors || []).some((e) => e.severity === "error")) process.exit(1);

const contracts = {};
for (const [name, c] of Object.entries(result.contracts["SafeLike.sol"]).sort()) {
  contracts[name] = { abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
}
const out = join(here, "SafeLike.json");
writeFileSync(out, JSON.stringify({ compiler: solc.version(), contracts }, null, 1) + "\n");
console.log(`wrote ${out}`);
