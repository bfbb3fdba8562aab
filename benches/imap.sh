#!/usr/bin/env bash
# Bulk decryption of a shared IMAP mailbox against Dovecot on loopback
# (issue 8 §5), as a ratio to the yardstick measured in the same run:
#  0. the load (uptime) before and after;
#  1. the yardstick (criterion `yardstick/rsa3072_private_decrypt`), before and after;
#  2. Dovecot (Debian's dovecot-imapd) in a temporary directory on a loopback
#     port; N (default 2,000) 10 KB messages encrypted to the organisation's
#     RSA-3072 certificate delivered into its Maildir;
#  3. `sikkermail mailbox decrypt` over them, R times (default 3; each on a
#     freshly delivered Maildir), messages per second from the wall time of
#     the whole command, as a ratio to cores x yardstick;
#  4. `openssl speed rsa3072` (Debian's OpenSSL) as the second reference.
# Knobs: N, R, BATCH, PERF (1: perf record the command, print the top symbols), FSYNC (Dovecot's mail_fsync: optimized, the default, or never) (the mailbox's batch, default 100), CARGO_TARGET_DIR,
# YARDSTICK_US (skip criterion while trying knobs). Needs root (Dovecot's mail
# processes run as nobody). See benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
R=${R:-3}
BATCH=${BATCH:-100}
. benches/lib.sh   # bench_build, yardstick, ratio
echo "== load before: $(uptime)"
bench_build
Y1=${YARDSTICK_US:-$(yardstick)}
echo "== yardstick (vendored OpenSSL, RSA-3072 private decrypt): ${Y1} us"
W=$(mktemp -d /tmp/imapbench.XXXXXX)
chmod 755 "$W"
DPID=
stop_dovecot() {
    [ -n "$DPID" ] || return 0
    kids=$(ps -o pid=,comm= --ppid "$DPID" | awk '$2 ~ /^imap/ {print $1}')
    kill -TERM "$DPID" $kids 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
    DPID=
}
trap 'stop_dovecot; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo 'post@firma.test:{PLAIN}hemmelig' > "$W/users"
mkdir "$W/home" && chown nobody:nogroup "$W/home"
cat > "$W/dovecot.conf" <<EOF
base_dir = $W/run
state_dir = $W/state
log_path = $W/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
passdb {
  driver = passwd-file
  args = scheme=PLAIN $W/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$W/home/%u
}
mail_location = maildir:~/Maildir
mail_fsync = ${FSYNC:-optimized}
namespace inbox {
  inbox = yes
  separator = /
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $PORT
  }
}
EOF
start_dovecot() {
    /usr/sbin/dovecot -F -c "$W/dovecot.conf" & DPID=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$PORT && read -r -t 2 g <&3 && [[ $g == "* OK"* ]]) 2>/dev/null && return
        sleep 0.05
    done
    echo "Dovecot did not start"; cat "$W/dovecot.log"; exit 1
}

D="$W/data"
"$B" init --data-dir "$D" --org-name "Bench Advokater" --cvr 12345678 >/dev/null
ID=$("$B" cert issue --data-dir "$D" --kind organisation --name "Post" --email post@firma.test | cut -f1)
"$B" cert show --data-dir "$D" "$ID" | sed -n '/BEGIN CERTIFICATE/,$p' > "$W/org.pem"
openssl x509 -in "$W/org.pem" -noout -text | grep -q "Public-Key: (3072 bit)" || { echo "the organisation key is not RSA-3072"; exit 1; }
python3 - "$W/msg10k.eml" <<'PY'
import sys
line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
head = b"From: retten@domstol.test\r\nTo: post@firma.test\r\nSubject: bulk\r\nContent-Type: text/plain\r\n\r\n"
open(sys.argv[1], "wb").write((head + line * 200)[:10240])
PY
"$B" smime encrypt --to "$W/org.pem" --in "$W/msg10k.eml" --out "$W/enc.eml"
echo "== message: $(wc -c < "$W/enc.eml") bytes encrypted (10240 plain)"
cat > "$W/sikkermail.toml" <<EOF
data_dir = "$D"
[mailbox.post]
host = "127.0.0.1"
port = $PORT
tls = "none"
user = "post@firma.test"
password_env = "IMAP_PW"
batch = $BATCH
EOF
C=$(nproc)
deliver() {
    rm -rf "$W/home/post@firma.test"
    md="$W/home/post@firma.test/Maildir"
    mkdir -p "$md/cur" "$md/new" "$md/tmp"
    for i in $(seq 1 "$N"); do cp "$W/enc.eml" "$md/cur/$i.M${i}P1.bench:2,"; done
    chown -R nobody:nogroup "$W/home/post@firma.test"
}
echo "== $R runs of $N messages, batch $BATCH, $C cores"
for r in $(seq 1 "$R"); do
    stop_dovecot
    deliver
    sync
    start_dovecot
    t0=$(date +%s.%N)
    PERFCMD=()
    [ -n "${PERF:-}" ] && PERFCMD=(perf record -q -g -o "$W/perf.data")
    out=$(IMAP_PW=hemmelig /usr/bin/time -f "cpu: sikkermail user %U s sys %S s, max RSS %M KB" \
        "${PERFCMD[@]}" "$B" mailbox decrypt --config "$W/sikkermail.toml" --mailbox post --rescan 2>&1 | grep -E '^(mailbox|cpu|fetch)' | tr '\n' ' ')
    t1=$(date +%s.%N)
    rate=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    # Dovecot's master reaps its imap processes: their CPU is in its cutime + cstime.
    dc=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($16 + $17) / hz }' "/proc/$DPID/stat")
    echo "$out ($secs s, $rate msgs/s; Dovecot's processes ${dc} s CPU)  => $(ratio "$rate" "$Y1" "$C")"
    [ -n "${PERF:-}" ] && perf report -i "$W/perf.data" --no-children --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
done
stop_dovecot
Y2=${YARDSTICK_US:-$(yardstick)}
echo "== yardstick again: ${Y2} us"
echo "== openssl speed rsa3072 (Debian's $(openssl version | cut -d' ' -f2)), one core"
openssl speed -seconds 5 rsa3072 2>/dev/null | grep -E "^rsa 3072"
echo "== load after: $(uptime)"
