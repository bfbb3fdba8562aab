#!/usr/bin/env python3
# Sorts kept findings (findings/<target>/openssl-opens-engine-refuses-*) into
# the deliberate classes of smime/src/lib.rs by their shape; prints OTHER for
# any that fits none (those need a look). Usage: classify.py DIR PREFIX
import sys, os, re, collections
d = sys.argv[1]
B64 = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n \t")
def classify(name, data):
    if 'NoMatchingKey' in name or 'MalformedRid' in name:
        return 'altered-recipient-id'
    if data[:1] == b'\x30' and b'Content-' in data:
        return 'der-then-mime'
    # header section
    m = re.search(rb'\r?\n\r?\n', data)
    head = data[:m.start()] if m else data
    body = data[m.end():] if m else b''
    bad = False
    for n, line in enumerate(re.split(rb'\r?\n', head)):
        if not line: continue
        if line[:1] in (b' ', b'\t') and n == 0:
            bad = True
        if line[:1] in (b' ', b'\t'): 
            if any(c > 126 or (c < 32 and c not in (9,13)) for c in line): bad = True
            continue
        mm = re.match(rb'^([!-9;-~]+):', line)
        if not mm or any(c > 126 or (c < 32 and c not in (9,13)) for c in line):
            bad = True
    if bad or not m:
        return 'malformed-header-line'
    b64 = re.sub(rb'\s', b'', body)
    if any(c not in B64 for c in body.strip()) or re.search(rb'=[^=]', b64) or len(b64) % 4:
        return 'bad-base64'
    if data[:1] == b'\x30':
        return 'der'
    return 'OTHER'
out = collections.Counter(); others = []
for f in sorted(os.listdir(d)):
    if not f.startswith(sys.argv[2]): continue
    data = open(os.path.join(d, f), 'rb').read()
    c = classify(f, data)
    kind = re.sub(r'-\d+$', '', f)
    out[(kind, c)] += 1
    if c == 'OTHER': others.append(f)
for k, v in sorted(out.items()): print(v, *k)
print('OTHER:', others)
