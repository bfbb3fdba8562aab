#!/usr/bin/env bash
# End-to-end load bench of the command line, beside the yardsticks.
#  1. bulk decrypt of N (default 2,000) 10 KB messages encrypted to one
#     RSA-3072 key: `sikkermail smime decrypt --in-dir --out-dir`, all cores;
#  2. encrypt of a 25 MB message: wall time and peak memory (max RSS);
#  3. `openssl speed rsa3072` (Debian's OpenSSL) as the second reference.
# The first yardstick (the vendored OpenSSL's bare RSA-3072 private-key
# operation) comes from `cargo bench --bench smime`; see benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
cargo build --release -q
B=$PWD/target/release/sikkermail
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
openssl req -x509 -newkey rsa:3072 -nodes -keyout k.pem -out c.pem -subj /CN=bulk -days 2 2>/dev/null
cat k.pem c.pem > kc.pem
python3 - <<'PY'
line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
head = b"From: a@advokat.example\r\nTo: b@domstol.example\r\nSubject: bulk\r\nContent-Type: text/plain\r\n\r\n"
open("msg10k.eml", "wb").write((head + line * 200)[:10240])
big = head + line * (25 * 1024 * 1024 // len(line) + 1)
open("msg25m.eml", "wb").write(big[:25 * 1024 * 1024])
PY
mkdir in out
echo "== preparing $N encrypted messages"
for i in $(seq -w 1 "$N"); do "$B" smime encrypt --to c.pem --in msg10k.eml --out "in/m$i.eml"; done
echo "== bulk decrypt ($(nproc) cores)"
/usr/bin/time -f "wall %e s, max RSS %M KB" "$B" smime decrypt --key kc.pem --in-dir in --out-dir out 2>&1 | tail -3
echo "== 25 MB encrypt to a file"
/usr/bin/time -f "wall %e s, max RSS %M KB" "$B" smime encrypt --to c.pem --in msg25m.eml --out big.p7m 2>&1 | tail -1
ls -l msg25m.eml big.p7m | awk '{print $5, $9}'
echo "== 25 MB decrypt (check)"
"$B" smime decrypt --key kc.pem --in big.p7m | tail -c 81 | head -c 40; echo
echo "== openssl speed rsa3072 (Debian's $(openssl version | cut -d' ' -f2)), one core"
openssl speed -seconds 5 rsa3072 2>/dev/null | grep -E "^rsa 3072"
