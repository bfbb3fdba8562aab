# Shared by the bench scripts (bulk.sh, gateway.sh): sourced, not run.
# Expects the repository root as the working directory.
#   bench_build         builds the release binary (honouring CARGO_TARGET_DIR); sets T and B
#   yardstick           prints the criterion yardstick in microseconds: the vendored
#                       OpenSSL's bare RSA-3072 private-key operation
#                       (`yardstick/rsa3072_private_decrypt` in benches/smime.rs)
#   ratio RATE Y CORES  prints RATE (per second) as a ratio to CORES x (1e6 / Y)

bench_build() {
    T=${CARGO_TARGET_DIR:-$PWD/target}
    cargo build --release -q
    B=$T/release/sikkermail
}

yardstick() {
    cargo bench -q --bench smime -- yardstick/ 2>/dev/null |
        awk '/time:/ { sub(/.*time: *\[/, ""); split($0, a, " "); v = a[3]; u = a[4];
                       if (u == "ms") v *= 1000; if (u == "ns") v /= 1000; print v }'
}

ratio() {
    awk -v r="$1" -v y="$2" -v c="$3" 'BEGIN { printf "%.3fx of %d x yardstick", r / (c * 1e6 / y), c }'
}
