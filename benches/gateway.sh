#!/usr/bin/env bash
# End-to-end speed of `sikkermail serve` (issue 6 §7): a benchmark, not a
# timed test. Postfix's smtp-source sends, smtp-sink (-c: counts only, keeps
# nothing) is the next hop and the relay.
#  0. the load (uptime, top) before and after; the release build
#     (CARGO_TARGET_DIR honoured);
#  1. the yardstick before and after (criterion, as bulk.sh: benches/lib.sh);
#  2. INBOUND: a data directory with an RSA-3072 organisation certificate,
#     ONE message of 10 KB encrypted to it by `openssl cms -encrypt
#     -aes-256-cbc` (LF line ends, as `smtp-source -F` wants), sent N times
#     over S sessions into the inbound port; the gateway decrypts it and
#     delivers it to the sink;
#  3. OUTBOUND: the same with a plain 10 KB message into the outbound port to
#     a recipient whose RSA-3072 certificate was imported: signed with the
#     organisation certificate, encrypted, delivered to the sink;
#  4. per run: accepted msgs/s (smtp-source wall time), end-to-end msgs/s
#     (first 250 to the last delivery), latency 250 -> delivery p50/p99
#     (every message, from the gateway's log timestamps; and the /metrics
#     histogram), the CPU the gateway used per message, each rate as a ratio
#     to cores x yardstick; then a light-load phase (LIGHT messages, LS
#     sessions each waiting 1 s between messages) for the latency without a
#     backlog; and checks: the sink counted every message, /metrics says
#     every one was decrypted (or signed and encrypted) and delivered;
#  5. `openssl speed -seconds 5 rsa3072` (Debian's OpenSSL) as the second
#     reference.
# Each run gets a fresh copy of the data directory (on the disk of mktemp -d,
# so the queue's fsyncs are real) and fresh serve and sink processes.
# Knobs (environment):
#   N=2000        messages per run          S=8        smtp-source sessions
#   WORKERS="2 4" [queue] workers to try    R=1        runs per direction and setting
#   DIRS="inbound outbound"                 REUSE=0    1: smtp-source -d (reuse connections)
#   LIGHT=100     light-load messages (0: none)        LS=8  its sessions (~LS msgs/s)
#   TOPH=1        per-thread CPU of serve (from /proc/PID/task, the whole run) and a top
#                 of the busiest processes 2-7 s into each run
#   PERF=0        1: perf record the serve process during each run, print its top symbols
#   SYSCALLS=0    1: strace -c the serve process during each run (clock_nanosleep, fsync,
#                 connect): SQLite's busy-handler sleeps per message; halves the rate here
#   TIMEOUT=600   seconds to wait for the deliveries after the last 250
#   YARDSTICK_US  a yardstick (us) to use instead of measuring it: only while trying knobs
# See benches/README.md.
set -eEuo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh   # bench_build, yardstick, ratio
N=${N:-2000}
S=${S:-8}
R=${R:-1}
WORKERS=${WORKERS:-"2 4"}
DIRS=${DIRS:-"inbound outbound"}
REUSE=${REUSE:-0}
LIGHT=${LIGHT:-100}
LS=${LS:-8}
TOPH=${TOPH:-1}
PERF=${PERF:-0}
SYSCALLS=${SYSCALLS:-0}
TIMEOUT=${TIMEOUT:-600}
if [ "$LIGHT" -gt 0 ] && [ "$LIGHT" -lt "$LS" ]; then echo "LIGHT ($LIGHT) must be 0 or at least LS ($LS)" >&2; exit 2; fi
if [ "$PERF" = 1 ] || [ "$SYSCALLS" = 1 ]; then
    echo "!! PERF=1 / SYSCALLS=1 attach to serve and slow it down: use such runs for the profile, not for the rates"
fi
C=$(nproc)
HZ=$(getconf CLK_TCK)

echo "== load before: $(uptime)"
top -bn1 | head -15
echo "== building the release binary"
bench_build
echo "   $B"
Y1=${YARDSTICK_US:-$(yardstick)}   # YARDSTICK_US=2500: skip criterion (only while trying knobs)
echo "== yardstick (vendored OpenSSL, RSA-3072 private decrypt): ${Y1} us = $(awk -v y="$Y1" 'BEGIN { printf "%.0f", 1e6 / y }')/s per core, $C cores"

W=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do { kill "$p" && wait "$p"; } 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
trap 'echo "FAILED at line $LINENO" >&2; [ -f "$W/run/serve.log" ] && tail -20 "$W/run/serve.log" >&2' ERR
REPO=$PWD
cd "$W"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; return 1; }
# Forgets a PID that was reaped (so the exit trap never signals a reused one).
forget() {
    local k=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || k+=("$p"); done
    PIDS=("${k[@]}")
}
# Stops a process this script started (by its PID) and forgets it.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}
# As root smtp-sink insists on -u (see shared/peers/mta-recipes.sh).
SINK_U=()
[ "$(id -u)" = 0 ] && SINK_U=(-u root)
# utime + stime of a process, in clock ticks.
proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# busy idle iowait steal (clock ticks, all cores) from /proc/stat.
machine_cpu() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, $5, $6, $9 }' /proc/stat; }
# tid name ticks, per thread of a process.
threads_cpu() { cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{ gsub(/[()]/, "", $2); print $1, $2, $14 + $15 }'; }
# write_bytes of a process (what it sent to the block layer).
proc_wbytes() { awk '$1 == "write_bytes:" { print $2 }' "/proc/$1/io"; }
metric() { curl -s "http://$HTTP/metrics" | awk -v k="$1" 'index($0, k) == 1 { v = $NF } END { print v + 0 }'; }

echo "== preparing: data directory, RSA-3072 organisation certificate, recipient certificate, messages"
"$B" init --data-dir pristine --org-name "Bench Advokater ApS" --cvr 12345678 >/dev/null
ORG_ID=$("$B" cert issue --data-dir pristine --kind organisation --name "Bench postkasse" --email post@advokat.test | awk '{ print $1; exit }')
# `cert show` prints the PEM last.
"$B" cert show --data-dir pristine "$ORG_ID" |
    awk '/-----BEGIN CERTIFICATE-----/ { b = "" } { b = b $0 "\n" } /-----END CERTIFICATE-----/ { last = b } END { printf "%s", last }' > org.crt
openssl x509 -in org.crt -noout -text | grep -q 'Public-Key: (3072 bit)'
echo "   organisation certificate $ORG_ID: $(openssl x509 -in org.crt -noout -subject | cut -c1-60)..., RSA 3072"
openssl req -x509 -newkey rsa:3072 -nodes -days 30 -subj "/CN=Retten/emailAddress=post@retten.test" \
    -addext basicConstraints=CA:FALSE -addext keyUsage=digitalSignature,keyEncipherment \
    -addext extendedKeyUsage=emailProtection -addext subjectAltName=email:post@retten.test \
    -keyout rcpt.key -out rcpt.crt 2>/dev/null
"$B" recipient import --data-dir pristine rcpt.crt >/dev/null
echo "   recipient post@retten.test: $(openssl x509 -in rcpt.crt -noout -text | grep -o 'Public-Key: ([0-9]* bit)')"
python3 - <<'PY'
line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n"
inner = "Content-Type: text/plain; charset=us-ascii\n\n"
open("inner.txt", "w").write((inner + line * 200)[:10240])
head = "From: post@advokat.test\nTo: post@retten.test\nSubject: bench\nContent-Type: text/plain; charset=us-ascii\n\n"
open("outbound.eml", "w").write((head + line * 200)[:10240])
PY
openssl cms -encrypt -aes-256-cbc -in inner.txt -out inbound.eml -from sender@retten.test \
    -to post@advokat.test -subject bench org.crt
for f in inbound.eml outbound.eml; do
    if grep -q $'\r' "$f"; then echo "$f has CR line ends: smtp-source -F would send CR CR LF" >&2; exit 1; fi
done
echo "   inbound.eml: $(wc -c < inbound.eml) bytes (10,240 inside the encryption); outbound.eml: $(wc -c < outbound.eml) bytes"

# The analysis of one phase: the slice of serve's log, /metrics before and after.
cat > analyse.py <<'PY'
import re, sys
from datetime import datetime
log, m0, m1, direction, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ts = lambda s: datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
queued, delivered, other = {}, {}, 0
for l in open(log):
    m = re.match(r"(\S+)\s+INFO (queued|delivery attempt) queue_id=(\d+)", l)
    if not m:
        continue
    t, what, qid = ts(m.group(1)), m.group(2), int(m.group(3))
    if what == "queued":
        queued[qid] = t
    elif 'state="delivered"' in l:
        delivered[qid] = t
    else:
        other += 1
lat = sorted(delivered[i] - queued[i] for i in delivered if i in queued)
if len(queued) != n or len(lat) != n or other:
    print(f"!! log: {len(queued)} queued, {len(lat)} delivered, {other} other attempts; expected {n}")
    sys.exit(1)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
first, lastq, lastd = min(queued.values()), max(queued.values()), max(delivered.values())
acc = n / (lastq - first) if lastq > first else float("nan")
e2e = n / (lastd - first)
print(f"   log: first 250 -> last 250 {lastq - first:.2f} s ({acc:.0f} msgs/s), first 250 -> last delivery {lastd - first:.2f} s")
print(f"   latency 250 -> delivery recorded, all {n} (log timestamps): p50 {q(0.5):.3f} s, p99 {q(0.99):.3f} s, max {lat[-1]:.3f} s")
def hist(path, name, labels):
    b = {}
    for l in open(path):
        m = re.match(r'%s_bucket\{%sle="([^"]+)"\} (\S+)' % (name, labels), l)
        if m:
            b[float(m.group(1))] = float(m.group(2))
    return b
def hq(name, labels, p):  # Prometheus histogram_quantile over this phase: linear inside the bucket
    h0, h1 = hist(m0, name, labels), hist(m1, name, labels)
    les = sorted(h1)
    cum = [h1[le] - h0.get(le, 0) for le in les]
    want = p * cum[-1]
    for i, c in enumerate(cum):
        if c >= want:
            lo, clo = (les[i - 1], cum[i - 1]) if i else (0.0, 0.0)
            if les[i] == float("inf"):
                return lo
            return lo + (les[i] - lo) * ((want - clo) / (c - clo) if c > clo else 1)
    return float("nan")
d = ('sikkermail_delivery_latency_seconds', 'direction="%s",' % direction)
c = ('sikkermail_commit_latency_seconds', '')
print(f"   latency from /metrics buckets (histogram_quantile): p50 {hq(*d, 0.5):.3f} s, p99 {hq(*d, 0.99):.3f} s")
print(f"   queue commit before each 250 (/metrics commit_latency, histogram_quantile): p50 {hq(*c, 0.5) * 1000:.1f} ms, p99 {hq(*c, 0.99) * 1000:.1f} ms")
print(f"RESULT {e2e:.1f} {q(0.5):.3f} {q(0.99):.3f}")
PY

SUMMARY=()
run() {  # direction workers run#
    local dir=$1 wk=$2 r=$3 tag="$1-w$2-r$3"
    rm -rf run && mkdir run && cp -a pristine run/data
    local sp; sp=$(free_port)
    smtp-sink "${SINK_U[@]}" -c "127.0.0.1:$sp" 256 > run/sink.out 2> run/sink.err & local sink=$!
    PIDS+=("$sink")
    wait_port "$sp"
    cat > run/cfg.toml <<EOF
data_dir = "$W/run/data"
hostname = "gw.bench"
[organisation]
domains = ["advokat.test"]
[inbound]
listen = "127.0.0.1:0"
next_hop = "127.0.0.1:$sp"
next_hop_tls = "none"
[outbound]
listen = "127.0.0.1:0"
relay = "127.0.0.1:$sp"
relay_tls = "none"
[queue]
workers = $wk
[http]
listen = "127.0.0.1:0"
EOF
    "$B" serve --config run/cfg.toml > run/serve.out 2> run/serve.log & local spid=$!
    PIDS+=("$spid")
    for _ in $(seq 1200); do grep -q '^ready$' run/serve.out && break; kill -0 "$spid"; sleep 0.1; done
    grep -q '^ready$' run/serve.out
    local addr from to file
    HTTP=$(awk '$1 == "HTTP" { sub("http://", "", $2); sub("/metrics", "", $2); print $2 }' run/serve.out)
    if [ "$dir" = inbound ]; then
        addr=$(awk '$1 == "inbound" { print $3 }' run/serve.out)
        from=sender@retten.test to=post@advokat.test file=inbound.eml
    else
        addr=$(awk '$1 == "outbound" { print $3 }' run/serve.out)
        from=post@advokat.test to=post@retten.test file=outbound.eml
    fi
    local reuse=()
    [ "$REUSE" = 1 ] && reuse=(-d)
    echo
    echo "== $dir, [queue] workers = $wk, run $r: $N messages over $S sessions$([ "$REUSE" = 1 ] && echo ", connections reused") into $addr"
    curl -s "http://$HTTP/metrics" > run/m0.txt
    local l0; l0=$(wc -l < run/serve.log)
    local c0 m0 w0 t0 t1 t2 tops=() perfp="" stp=""
    c0=$(proc_cpu "$spid"); m0=$(machine_cpu); w0=$(proc_wbytes "$spid")
    threads_cpu "$spid" > run/threads0.txt
    if [ "$TOPH" = 1 ]; then
        (sleep 2; exec top -b -d 5 -n 2) > "run/top.txt" 2>/dev/null & tops+=($!)
        PIDS+=("${tops[@]}")
    fi
    if [ "$PERF" = 1 ]; then
        perf record -q -F 999 -g -p "$spid" -o "run/perf.data" 2>/dev/null & perfp=$!
        PIDS+=("$perfp")
    fi
    if [ "$SYSCALLS" = 1 ]; then
        strace -f -c -p "$spid" --seccomp-bpf -e trace=clock_nanosleep,nanosleep,fsync,fdatasync,connect \
            -o run/strace.txt 2>/dev/null & stp=$!
        PIDS+=("$stp")
        sleep 0.5
    fi
    t0=$(date +%s.%N)
    smtp-source "${reuse[@]}" -s "$S" -m "$N" -F "$file" -f "$from" -t "$to" "$addr"
    t1=$(date +%s.%N)
    # Wait for every delivery: read the log, not /metrics (no load on serve).
    local got=0 deadline=$((SECONDS + TIMEOUT))
    while :; do
        got=$(tail -n +"$((l0 + 1))" run/serve.log | grep -c 'delivery attempt.*state="delivered"' || true)
        [ "$got" -ge "$N" ] && break
        kill -0 "$spid"
        if tail -n +"$((l0 + 1))" run/serve.log | grep -q 'delivery attempt.*state="\(deferred\|failed\)"'; then
            echo "!! a delivery failed or was deferred:" >&2
            grep 'delivery attempt.*state="\(deferred\|failed\)"' run/serve.log | head -3 >&2
            exit 1
        fi
        [ "$SECONDS" -lt "$deadline" ] || { echo "!! only $got of $N delivered after ${TIMEOUT} s" >&2; exit 1; }
        sleep 0.2
    done
    t2=$(date +%s.%N)
    local c1 m1 w1; c1=$(proc_cpu "$spid"); m1=$(machine_cpu); w1=$(proc_wbytes "$spid")
    threads_cpu "$spid" > run/threads1.txt
    if [ -n "$stp" ]; then kill -INT "$stp"; wait "$stp" 2>/dev/null || true; forget "$stp"; fi
    if [ -n "$perfp" ]; then kill -INT "$perfp"; wait "$perfp" 2>/dev/null || true; forget "$perfp"; fi
    for p in "${tops[@]}"; do wait "$p" 2>/dev/null || true; forget "$p"; done
    curl -s "http://$HTTP/metrics" > run/m1.txt
    local acc; acc=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')
    echo "   accepted: smtp-source took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s = $acc msgs/s  => $(ratio "$acc" "$Y1" "$C")"
    echo "   all delivered $(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.2f", b - a }') s after smtp-source started (polled every 0.2 s)"
    tail -n +"$((l0 + 1))" run/serve.log > run/phase.log
    local res; res=$(python3 analyse.py run/phase.log run/m0.txt run/m1.txt "$dir" "$N" | tee run/analysis.txt | tail -1)
    grep -v '^RESULT' run/analysis.txt
    local e2e p50 p99
    read -r _ e2e p50 p99 <<< "$res"
    echo "   end-to-end (first 250 -> last delivery): $e2e msgs/s  => $(ratio "$e2e" "$Y1" "$C")"
    # CPU: the gateway's own, and the machine's (all cores) over the run.
    read -r mb0 mi0 mw0 ms0 <<< "$m0"
    read -r mb1 mi1 mw1 ms1 <<< "$m1"
    awk -v c="$((c1 - c0))" -v hz="$HZ" -v n="$N" -v y="$Y1" -v a="$t0" -v b="$t2" -v cores="$C" \
        -v mb="$((mb1 - mb0))" -v mi="$((mi1 - mi0))" -v mw="$((mw1 - mw0))" -v ms="$((ms1 - ms0))" -v wb="$((w1 - w0))" 'BEGIN {
        s = c / hz; w = b - a; tot = mb + mi + mw
        printf "   serve CPU: %.2f s over %.2f s (%.2f cores) = %.2f ms per message; one RSA-3072 private op (yardstick) = %.2f ms = %.0f%% of it\n", s, w, s / w, 1000 * s / n, y / 1000, 100 * (y / 1000) / (1000 * s / n)
        printf "   serve wrote %.0f KB to the disk per message (SQLite WAL and database)\n", wb / 1024 / n
        printf "   machine: %.0f%% busy of %d cores (serve %.0f%%, everything else %.0f%%), iowait %.0f%%, steal %.0f%%\n", 100 * mb / tot, cores, 100 * (c / hz) / (tot / hz), 100 * (mb - c) / tot, 100 * mw / tot, 100 * ms / tot }'
    if [ "$TOPH" = 1 ]; then
        echo "   threads of serve, CPU over the whole run (% of one core):"
        awk -v hz="$HZ" -v w="$(awk -v a="$t0" -v b="$t2" 'BEGIN { print b - a }')" -v total="$((c1 - c0))" '
            NR == FNR { t0[$1] = $3; next }
            { d = $3 - t0[$1]; sum += d; if (d > 0) printf "%d %s\n", d, $2 }
            END { if (total - sum > 0) printf "%d (threads that ended during the run)\n", total - sum }' \
            run/threads0.txt run/threads1.txt |
            sort -rn | head -12 | awk -v hz="$HZ" -v w="$(awk -v a="$t0" -v b="$t2" 'BEGIN { print b - a }')" '
            { t = $1; $1 = ""; printf "     %5.1f%%%s\n", 100 * t / hz / w, $0 }'
        echo "   busiest processes (top, a 5 s window from 2 s into the run):"
        awk '/^top -/ { n++ } n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 > 0.5 { printf "     %5s%% %s\n", $9, $12 }' run/top.txt | head -8
    fi
    if [ -n "$stp" ]; then
        echo "   syscalls of serve during the run (strace -c; sleeps are SQLite's busy handler waiting for the write lock):"
        awk -v n="$N" '$NF ~ /^(clock_nanosleep|nanosleep|fsync|fdatasync|connect)$/ {
            printf "     %-16s %7d calls = %5.2f per message, %8.3f s in all\n", $NF, $4, $4 / n, $2 }' run/strace.txt
    fi
    if [ -n "$perfp" ]; then
        perf report -i run/perf.data --stdio --no-children -g none --sort dso,sym 2>/dev/null |
            grep -E '^ +[0-9.]+%' > run/perf-self.txt || true
        echo "   perf, serve's samples by kind (self time):"
        awk '{ p = $1 + 0; d = $2; k = $3; $1 = $2 = $3 = ""; sym = $0
               if (k == "[k]") c = "kernel"
               else if (sym ~ /bn_|mulx4x|rsaz|BN_/) c = "RSA arithmetic (the yardstick'"'"'s work)"
               else if (sym ~ /sqlite3|[Pp]ager|[Bb]tree|[Ww]al[A-Z]|[Vv]dbe|pcache|sqlx/) c = "SQLite + sqlx"
               else if (d ~ /libc/) c = "libc (malloc, memcpy, ...)"
               else if (sym ~ /tokio|mio::|flume|parking/) c = "tokio, channels"
               else if (sym ~ /EVP|CMS|asn1|ASN1|X509|x509|d2i|i2d|ossl|OPENSSL|CRYPTO|aes|AES|sha|SHA/) c = "OpenSSL other (CMS, ASN.1, AES)"
               else c = "other user space"
               t[c] += p }
             END { for (c in t) printf "     %5.1f%%  %s\n", t[c], c }' run/perf-self.txt | sort -rn
        echo "   perf, kernel time by system call (inclusive, % of serve's samples):"
        perf report -i run/perf.data --stdio --children -g none --sort sym 2>/dev/null |
            awk '$NF ~ /^__x64_sys_/ && $1 + 0 >= 0.5 { printf "     %6s  %s\n", $1, substr($NF, 11) }' | head -12
        echo "   perf, top symbols (self time):"
        head -15 run/perf-self.txt | sed 's/^/   /'
    fi
    local light=""
    if [ "$LIGHT" -gt 0 ]; then
        curl -s "http://$HTTP/metrics" > run/m2.txt
        local l1; l1=$(wc -l < run/serve.log)
        # LS single-session senders, started 1/LS s apart, each pausing 1 s
        # after a message: an even ~LS msgs/s, not bursts of LS.
        local srcs=() k
        for k in $(seq 1 "$LS"); do
            smtp-source -s 1 -w 1 -m "$(( (LIGHT + LS - k) / LS ))" -F "$file" -f "$from" -t "$to" "$addr" & srcs+=($!)
            PIDS+=("$!")
            sleep "$(awk -v s="$LS" 'BEGIN { print 1 / s }')"
        done
        for k in "${srcs[@]}"; do wait "$k"; forget "$k"; done
        deadline=$((SECONDS + TIMEOUT))
        while [ "$(tail -n +"$((l1 + 1))" run/serve.log | grep -c 'delivery attempt.*state="delivered"' || true)" -lt "$LIGHT" ]; do
            kill -0 "$spid"
            [ "$SECONDS" -lt "$deadline" ] || { echo "!! light phase not delivered after ${TIMEOUT} s" >&2; exit 1; }
            sleep 0.2
        done
        curl -s "http://$HTTP/metrics" > run/m3.txt
        tail -n +"$((l1 + 1))" run/serve.log > run/light.log
        echo "   light load: $LIGHT messages from $LS senders, each pausing 1 s after a message (~$LS msgs/s, no backlog):"
        python3 analyse.py run/light.log run/m2.txt run/m3.txt "$dir" "$LIGHT" | grep -E 'latency|commit' | sed 's/^   /     /'
        light=$(python3 analyse.py run/light.log run/m2.txt run/m3.txt "$dir" "$LIGHT" | tail -1 | awk '{ print $3 " / " $4 }')
    fi
    # Checks: the sink counted every message; /metrics agrees.
    local want=$((N + LIGHT))
    local dec sig enc del fails
    del=$(metric "sikkermail_deliveries_total{direction=\"$dir\"}")
    dec=$(metric sikkermail_decrypted_total)
    sig=$(metric sikkermail_signed_total)
    enc=$(metric sikkermail_encrypted_total)
    fails=$(curl -s "http://$HTTP/metrics" | grep -c '^sikkermail_failures_total{' || true)
    stop "$spid"
    grep -q 'stopped' run/serve.out
    stop "$sink"
    local counts; counts=$(tr '\r' '\n' < run/sink.out | grep mesg= | tail -1)
    echo "   checks: sink counted \"$counts\"; /metrics: delivered $del, decrypted $dec, signed $sig, encrypted $enc, failure lines $fails"
    echo "$counts" | grep -q " mesg=$want\$" || { echo "!! the sink did not count $want messages" >&2; exit 1; }
    [ "$del" = "$want" ] && [ "$fails" = 0 ] || { echo "!! /metrics does not show $want deliveries without failures" >&2; exit 1; }
    if [ "$dir" = inbound ]; then
        [ "$dec" = "$want" ] || { echo "!! /metrics: decrypted $dec, not $want" >&2; exit 1; }
    else
        [ "$sig" = "$want" ] && [ "$enc" = "$want" ] || { echo "!! /metrics: signed $sig, encrypted $enc, not $want" >&2; exit 1; }
    fi
    echo "   OK: $want delivered, every one $([ "$dir" = inbound ] && echo decrypted || echo signed and encrypted)"
    SUMMARY+=("$dir|$wk|$r|$acc|$e2e|$p50|$p99|${light:--}")
}

for dir in $DIRS; do
    for wk in $WORKERS; do
        for r in $(seq 1 "$R"); do
            run "$dir" "$wk" "$r"
        done
    done
done

cd "$REPO"
Y2=${YARDSTICK_US:-$(yardstick)}
echo
echo "== yardstick again: ${Y2} us"
echo "== openssl speed rsa3072 (Debian's $(openssl version | cut -d' ' -f2)), one core"
openssl speed -seconds 5 rsa3072 2>/dev/null | grep -E "^rsa 3072"
echo
echo "== summary: N=$N S=$S, $C cores; ratios to $C x yardstick before (${Y1} us) / after (${Y2} us)"
printf "%-9s %7s %3s %10s %8s %8s %16s %8s %8s %17s\n" direction workers run "accepted/s" "ratio" "e2e/s" "ratio" "p50 s" "p99 s" "light p50/p99 s"
for l in "${SUMMARY[@]}"; do
    IFS='|' read -r dir wk r acc e2e p50 p99 light <<< "$l"
    printf "%-9s %7s %3s %10s %8s %8s %16s %8s %8s %17s\n" "$dir" "$wk" "$r" "$acc" \
        "$(awk -v x="$acc" -v y="$Y1" -v c="$C" 'BEGIN { printf "%.2fx", x / (c * 1e6 / y) }')" "$e2e" \
        "$(awk -v x="$e2e" -v y="$Y1" -v z="$Y2" -v c="$C" 'BEGIN { printf "%.2fx / %.2fx", x / (c * 1e6 / y), x / (c * 1e6 / z) }')" \
        "$p50" "$p99" "$light"
done
echo
echo "== load after: $(uptime)"
top -bn1 | head -15
