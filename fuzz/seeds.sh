#!/usr/bin/env bash
# Seeds for the differential targets: messages made by the openssl CLI for
# the fixed key in keys/ (so decryption and verification succeed and the
# mutations start from working input), plus the shared test vectors.
set -euo pipefail
cd "$(dirname "$0")"
K=keys/leaf.pem
D=corpus/diff_decrypt
V=corpus/diff_verify
mkdir -p "$D" "$V"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
printf 'Content-Type: text/plain\r\n\r\nHej fra retten.\r\n' > "$t/m.txt"
printf 'bare content without a header\r\n' > "$t/bare.txt"
head -c 3000 /dev/urandom | base64 | sed 's/$/\r/' | (printf 'Content-Type: text/plain\r\n\r\n'; cat) > "$t/long.txt"
n=0
for c in -aes-128-cbc -aes-256-cbc -des3 -aes-256-gcm -aes-128-gcm; do
  for extra in "" "-keyid" "-keyopt rsa_padding_mode:oaep"; do
    for in in m.txt bare.txt long.txt; do
      n=$((n+1))
      openssl cms -encrypt $c $extra -in "$t/$in" -out "$D/enc-$n.eml" "$K" 2>/dev/null || true
      openssl cms -encrypt $c $extra -in "$t/$in" -outform DER -out "$D/enc-$n.der" "$K" 2>/dev/null || true
    done
  done
done
# Signed, then encrypted.
openssl cms -sign -in "$t/m.txt" -signer "$K" -out "$t/s.eml"
openssl cms -encrypt -aes-256-cbc -in "$t/s.eml" -out "$D/sign-enc.eml" "$K"
n=0
for md in sha1 sha256 sha512; do
  for extra in "" "-nodetach" "-keyid" "-keyopt rsa_padding_mode:pss" "-nosmimecap -noattr"; do
    for in in m.txt long.txt; do
      n=$((n+1))
      openssl cms -sign -md $md $extra -in "$t/$in" -signer "$K" -out "$V/sig-$n.eml" 2>/dev/null || true
      openssl cms -sign -md $md $extra -nodetach -in "$t/$in" -signer "$K" -outform DER -out "$V/sig-$n.der" 2>/dev/null || true
    done
  done
done
tv=../../shared/testvectors
if [ -d "$tv" ]; then
  cp "$tv"/rfc4134/*.bin "$tv"/rfc4134/*.eml "$tv"/gnupg/*.der "$D"/ 2>/dev/null || true
  cp "$tv"/thunderbird/*.eml "$V"/ 2>/dev/null || true
  # Real clients' mail (issue 12 §3): other keys, so mostly the parsers and
  # the recipient matching on the decrypt side; everything on verify.
  cp "$tv"/bouncycastle-smime/{test*.message,outlook_2010_beta_sime_msg.eml,brokenEnv.message} \
     "$tv"/kde-mimetreeparser/*.mbox "$tv"/dotnet-pkcs/*.der "$tv"/mimekit/content-length.mbox.txt.msg11.eml \
     "$tv"/simple-java-mail/S_MIME*encrypted.eml "$D"/ 2>/dev/null || true
  cp "$tv"/bouncycastle-smime/*.eml "$tv"/bouncycastle-smime/*.message "$tv"/kde-mimetreeparser/*.mbox \
     "$tv"/mimekit/*.eml "$tv"/mimekit/thunderbird-signed.txt "$tv"/mimekit/*.dat \
     "$tv"/simple-java-mail/*.eml "$tv"/header-protection/*.eml "$V"/ 2>/dev/null || true
fi
echo "seeds: $(ls "$D" | wc -l) for diff_decrypt, $(ls "$V" | wc -l) for diff_verify"
