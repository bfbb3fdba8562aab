#!/usr/bin/env bash
# End-to-end load bench of the command line, beside the yardsticks.
#  0. the load of the machine (uptime) before and after: record it with the result;
#  1. the yardstick: the vendored OpenSSL's bare RSA-3072 private-key
#     operation (criterion, `yardstick/rsa3072_private_decrypt`), measured
#     in the same run, before and after the bulk runs;
#  2. bulk decrypt of N (default 2,000) 10 KB messages encrypted to one
#     RSA-3072 key: `sikkermail smime decrypt --in-dir --out-dir`, all cores,
#     R times (default 5) into a fresh output directory, each as a ratio to
#     cores x yardstick;
#  3. encrypt of a 25 MB message: wall time and peak memory (max RSS);
#  4. `openssl speed rsa3072` (Debian's OpenSSL) as the second reference.
# CARGO_TARGET_DIR is honoured. Shared parts in benches/lib.sh. See benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
R=${R:-5}
. benches/lib.sh   # bench_build, yardstick, ratio
echo "== load before: $(uptime)"
bench_build
Y1=$(yardstick)
echo "== yardstick (vendored OpenSSL, RSA-3072 private decrypt): ${Y1} us"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
openssl req -x509 -newkey rsa:3072 -nodes -keyout k.pem -out c.pem -subj /CN=bulk -addext basicConstraints=critical,CA:FALSE -days 2 2>/dev/null
cat k.pem c.pem > kc.pem
python3 - <<'PY'
line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
head = b"From: a@advokat.example\r\nTo: b@domstol.example\r\nSubject: bulk\r\nContent-Type: text/plain\r\n\r\n"
open("msg10k.eml", "wb").write((head + line * 200)[:10240])
big = head + line * (25 * 1024 * 1024 // len(line) + 1)
open("msg25m.eml", "wb").write(big[:25 * 1024 * 1024])
PY
mkdir in
echo "== preparing $N encrypted messages"
"$B" smime encrypt --to c.pem --in msg10k.eml --out in/m1.eml
for i in $(seq 2 "$N"); do cp in/m1.eml "in/m$i.eml"; done
C=$(nproc)
echo "== bulk decrypt ($C cores), $R runs"
for r in $(seq 1 "$R"); do
    rm -rf out; sync
    line=$("$B" smime decrypt --key kc.pem --in-dir in --out-dir out 2>&1 | grep '^decrypted')
    rate=$(echo "$line" | sed -E 's/.*\(([0-9]+) files\/s\).*/\1/')
    echo "$line  => $(ratio "$rate" "$Y1" "$C")"
done
echo "== 25 MB encrypt to a file"
/usr/bin/time -f "wall %e s, max RSS %M KB" "$B" smime encrypt --to c.pem --in msg25m.eml --out big.p7m 2>&1 | tail -1
ls -l msg25m.eml big.p7m | awk '{print $5, $9}'
echo "== 25 MB decrypt (check)"
"$B" smime decrypt --key kc.pem --in big.p7m | tail -c 81 | head -c 40; echo
cd - >/dev/null
Y2=$(yardstick)
echo "== yardstick again: ${Y2} us"
echo "== openssl speed rsa3072 (Debian's $(openssl version | cut -d' ' -f2)), one core"
openssl speed -seconds 5 rsa3072 2>/dev/null | grep -E "^rsa 3072"
echo "== load after: $(uptime)"
