#!/usr/bin/env bash
# Peak memory of `sikkermail serve` under large inbound messages (issue 20 §4):
# N concurrent messages of SIZE bytes sent with Python's smtplib to the
# inbound listener (Maildir delivery), serve's VmHWM read from /proc.
#   N=30 SIZE=40000000 benches/memory.sh      # the issue's load
#   N=1  SIZE=40000000 benches/memory.sh      # one message: peak / size
# BIN=target/debug/sikkermail uses an existing binary instead of the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
N=${N:-30}
SIZE=${SIZE:-40000000}
if [ -z "${BIN:-}" ]; then bench_build; BIN=$B; fi
echo "load: $(uptime)"
python3 - "$BIN" "$N" "$SIZE" <<'PY'
import os, sys, subprocess, threading, time, smtplib, re, tempfile
binary, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = tempfile.mkdtemp(); data = os.path.join(d, 'data')
env = {k: v for k, v in os.environ.items() if not k.startswith('SIKKERMAIL_')}
subprocess.run([binary, 'init', '--test', '--data-dir', data], check=True, env=env, capture_output=True)
cfg = os.path.join(d, 'c.toml')
open(cfg, 'w').write(f'data_dir = "{data}"\nhostname = "gw.test"\n[organisation]\ndomains = ["advokat.test"]\n'
                     '[inbound]\nlisten = "127.0.0.1:0"\nmax_connections_per_address = 100\n'
                     '[outbound]\nlisten = "127.0.0.1:0"\n[http]\nlisten = "127.0.0.1:0"\n')
p = subprocess.Popen([binary, 'serve', '--config', cfg], stdout=subprocess.PIPE,
                     stderr=open(os.path.join(d, 'log'), 'w'), env=env, text=True)
port = None
for line in p.stdout:
    m = re.search(r'inbound SMTP\s+127\.0\.0\.1:(\d+)', line)
    if m: port = int(m.group(1))
    if line.strip() == 'ready': break
def status(field):
    for l in open(f'/proc/{p.pid}/status'):
        if l.startswith(field): return int(l.split()[1]) // 1024
base = status('VmHWM')
line = b'x' * 76 + b'\r\n'
body = b'From: a@b.test\r\nTo: post@advokat.test\r\nSubject: big\r\n\r\n' + line * (size // 78)
errs = []
def send():
    try:
        s = smtplib.SMTP('127.0.0.1', port, timeout=900)
        s.sendmail('a@b.test', ['post@advokat.test'], body)
        s.quit()
    except Exception as e:
        errs.append(repr(e))
t0 = time.time()
ts = [threading.Thread(target=send) for _ in range(n)]
[t.start() for t in ts]; [t.join() for t in ts]
acc = time.time() - t0
new = os.path.join(data, 'maildir', 'post@advokat.test', 'new')
while time.time() - t0 < 900:
    if os.path.isdir(new) and len(os.listdir(new)) >= n - len(errs): break
    time.sleep(0.5)
peak = status('VmHWM')
print(f'{n} x {size/1e6:.0f} MB: accepted in {acc:.1f} s, delivered {len(os.listdir(new))}, errors {len(errs)}; '
      f'RSS at start {base} MiB, peak {peak} MiB ({(peak - base) * 1048576 / size:.1f}x one message over the start)')
p.terminate(); p.wait()
subprocess.run(['rm', '-rf', d])
PY
echo "load: $(uptime)"
