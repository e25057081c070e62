#!/usr/bin/env bash
# make-demo-pki.sh — build the StapleGate demo PKI with the openssl CLI only.
#
# Produces, in one self-contained directory: a root CA, an issuing CA (with an
# `openssl ca` database whose index.txt is what `openssl ocsp -index` serves),
# ECDSA / RSA / must-staple server certificates, a delegated OCSP signer,
# good / revoked / expired / no-AIA devices, and a rogue CA with its device.
#
# Run with --help for usage.
set -euo pipefail

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEFAULT_OUT="$SCRIPT_DIR/out"
DEFAULT_URL="http://127.0.0.1:8888"
MARKER=".staplegate-demo-pki"
CRL_REASONS="unspecified keyCompromise CACompromise affiliationChanged superseded cessationOfOperation certificateHold removeFromCRL"

usage() {
    cat <<EOF
Usage:
  $PROG [--out DIR] [--ocsp-url URL] [--force]
      Build a complete demo PKI in DIR.
        --out DIR       output directory (default: $DEFAULT_OUT)
        --ocsp-url URL  OCSP responder URL put in the AIA extension of the
                        server and device certificates (default: $DEFAULT_URL)
        --force         if DIR already holds a PKI made by this script, wipe
                        it and build a new one (otherwise: refuse, exit 1)

  $PROG revoke [--out DIR] NAME [REASON]
      Revoke certificate DIR/NAME.pem in DIR/index.txt (openssl ca -revoke);
      DIR defaults as above.
      REASON defaults to keyCompromise; one of:
        $CRL_REASONS
      A running 'openssl ocsp -index DIR/index.txt -multi N' responder picks up
      the change by itself (each worker re-reads index.txt when it changes).

  $PROG --help

Files produced in DIR (keys ECDSA P-256 unless noted, certs SHA-256):
  root-ca.pem/.key            self-signed "StapleGate Demo Root CA" (10 years)
  issuing-ca.pem/.key         "StapleGate Demo Issuing CA", pathlen:0; issues all below
  ca-chain.pem                issuing-ca.pem + root-ca.pem
  server.pem/.key             CN=localhost, SAN localhost/127.0.0.1/::1 (leaf + issuing CA)
  server-rsa.pem/.key         same, RSA 2048
  server-muststaple.pem/.key  same as server.pem + TLS Feature status_request
  ocsp-signer.pem/.key        delegated OCSP signer (OCSPSigning, ocsp-nocheck)
  device-{1,2,3}.pem/.key     good devices (leaf + issuing CA)
  device-revoked.pem/.key     revoked (keyCompromise) in index.txt
  device-to-revoke.pem/.key   good; for tests to revoke later
  device-expired.pem/.key     validity 2020-01-01 .. 2021-01-01
  device-noaia.pem/.key       good device without AIA extension
  rogue-ca.pem/.key           separate self-signed "Rogue CA" (not trusted)
  device-rogue.pem/.key       device issued by the rogue CA
  ca.cnf, index.txt, index.txt.attr, serial, newcerts/   openssl ca database
EOF
}

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments
MODE=build
OUT=""
URL="$DEFAULT_URL"
FORCE=0
POSITIONAL=()
while (($#)); do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --out) (($# >= 2)) || die "--out needs a directory"; OUT=$2; shift 2 ;;
        --out=*) OUT=${1#--out=}; shift ;;
        --ocsp-url) (($# >= 2)) || die "--ocsp-url needs a URL"; URL=$2; shift 2 ;;
        --ocsp-url=*) URL=${1#--ocsp-url=}; shift ;;
        --force) FORCE=1; shift ;;
        revoke) if [[ $MODE == build && ${#POSITIONAL[@]} -eq 0 ]]; then MODE=revoke; else POSITIONAL+=("$1"); fi; shift ;;
        --) shift; POSITIONAL+=("$@"); break ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) POSITIONAL+=("$1"); shift ;;
    esac
done

command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH"

# Run a command quietly; on failure show its output and stop.
# Scratch space (CSRs, logs) outside DIR; removed on exit.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/make-demo-pki.XXXXXX")
BUILDING=""
on_exit() {
    local rc=$?
    rm -rf "$WORK"
    if ((rc != 0)) && [[ -n $BUILDING ]]; then
        printf '%s: %s is incomplete; rerun with --force\n' "$PROG" "$BUILDING" >&2
    fi
}
trap on_exit EXIT
run() {
    local log="$WORK/log.$BASHPID"   # per process: key generation runs in parallel
    if ! "$@" >"$log" 2>&1; then
        printf '%s: command failed: %s\n' "$PROG" "$*" >&2
        cat "$log" >&2
        exit 1
    fi
}

# =================================================================== revoke
if [[ $MODE == revoke ]]; then
    [[ -n $OUT ]] || OUT=$DEFAULT_OUT
    ((${#POSITIONAL[@]} >= 1 && ${#POSITIONAL[@]} <= 2)) || die "usage: $PROG revoke [--out DIR] NAME [REASON]"
    NAME=${POSITIONAL[0]%.pem}
    REASON=${POSITIONAL[1]:-keyCompromise}
    [[ $NAME != */* && -n $NAME ]] || die "NAME must be a file name in DIR (e.g. device-to-revoke), got '${POSITIONAL[0]}'"
    ok=0
    for r in $CRL_REASONS; do
        if [[ ${REASON,,} == "${r,,}" ]]; then REASON=$r; ok=1; fi
    done
    ((ok)) || die "unknown revocation reason '$REASON' (one of: $CRL_REASONS)"
    [[ -d $OUT ]] || die "no such directory: $OUT"
    cd "$OUT"
    [[ -f ca.cnf && -f index.txt ]] || die "$OUT does not hold a demo PKI (no ca.cnf / index.txt)"
    [[ -f $NAME.pem ]] || die "no such certificate: $OUT/$NAME.pem"
    serial=$(openssl x509 -in "$NAME.pem" -noout -serial) || die "cannot read $OUT/$NAME.pem"
    serial=${serial#serial=}
    # Index fields are TAB-separated: status, expiry, revocation, serial, file, subject.
    status=$(awk -F'\t' -v s="$serial" 'toupper($4) == toupper(s) { print $1 }' index.txt)
    [[ -n $status ]] || die "$NAME.pem (serial $serial) is not in $OUT/index.txt (not issued by the issuing CA?)"
    [[ $status != R ]] || die "$NAME.pem (serial $serial) is already revoked"
    run openssl ca -config ca.cnf -revoke "$NAME.pem" -crl_reason "$REASON"
    echo "revoked $NAME (serial $serial, reason $REASON) in $PWD/index.txt"
    exit 0
fi

# ==================================================================== build
((${#POSITIONAL[@]} == 0)) || die "unexpected argument '${POSITIONAL[0]}' (see --help)"
[[ -n $OUT ]] || OUT=$DEFAULT_OUT

# The URL is written literally into the openssl config: keep it to characters
# that need no quoting there ($ and # would be interpreted, ',' splits AIA).
url_re='^https?://[][A-Za-z0-9.:_~%/?&=+-]+$'
[[ $URL =~ $url_re ]] || die "bad --ocsp-url '$URL' (expected http://host[:port][/path])"
hostport=${URL#*://}; hostport=${hostport%%/*}
if [[ $hostport =~ :([0-9]+)$ ]]; then PORT=${BASH_REMATCH[1]}
elif [[ $URL == https://* ]]; then PORT=443
else PORT=80
fi

if [[ -e $OUT && ! -d $OUT ]]; then die "$OUT exists and is not a directory"; fi
if [[ -d $OUT ]]; then
    OUT=$(cd "$OUT" && pwd)
    if [[ -e $OUT/$MARKER || -e $OUT/index.txt || -e $OUT/root-ca.pem || -e $OUT/ca.cnf ]]; then
        ((FORCE)) || die "$OUT already holds a PKI; use --force to wipe it and make a new one"
        # Only wipe directories this script made (marker file), never arbitrary ones.
        [[ -e $OUT/$MARKER ]] || die "$OUT holds PKI files not made by $PROG; refusing to wipe it even with --force"
        find "$OUT" -mindepth 1 -delete
    fi
else
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
fi
chmod 0755 "$OUT"
cd "$OUT"
umask 022
: >"$MARKER"
BUILDING=$OUT

# Random positive serial (16 hex digits, first digit 1-7).
rand_hex() { od -An -tx1 -N8 /dev/urandom | tr -d ' \n' | sed 's/^./'"$((RANDOM % 7 + 1))"'/'; }

mkdir -p newcerts
: >index.txt
printf 'unique_subject = no\n' >index.txt.attr
rand_hex | tr 'a-f' 'A-F' >serial
echo >>serial

# ------------------------------------------------------------- ca.cnf
# All paths are relative: every openssl command runs with DIR as the current
# directory, so DIR can be moved and stays self-contained.
cat >ca.cnf <<EOF
# Generated by certs/make-demo-pki.sh — openssl config for the StapleGate demo PKI.
# Use from inside this directory: openssl ca -config ca.cnf ...
OCSP_URL = $URL

[ ca ]
default_ca = issuing_ca

[ issuing_ca ]
dir              = .
database         = \$dir/index.txt
serial           = \$dir/serial
new_certs_dir    = \$dir/newcerts
certificate      = \$dir/issuing-ca.pem
private_key      = \$dir/issuing-ca.key
default_md       = sha256
default_days     = 365
unique_subject   = no
preserve         = no
email_in_dn      = no
copy_extensions  = none
policy           = policy_cn
name_opt         = ca_default
cert_opt         = ca_default

[ policy_cn ]
commonName             = supplied
organizationName       = optional
organizationalUnitName = optional
countryName            = optional

[ req ]
distinguished_name = req_dn
string_mask        = utf8only
default_md         = sha256
prompt             = no

[ req_dn ]
CN = unused

[ ext_root_ca ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash

[ ext_issuing_ca ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ ext_server ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1, IP:::1
authorityInfoAccess    = OCSP;URI:\${OCSP_URL}
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ ext_server_rsa ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1, IP:::1
authorityInfoAccess    = OCSP;URI:\${OCSP_URL}
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ ext_server_muststaple ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1, IP:::1
authorityInfoAccess    = OCSP;URI:\${OCSP_URL}
tlsfeature             = status_request
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ ext_ocsp_signer ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = critical, OCSPSigning
noCheck                = ignored
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ ext_device ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
authorityInfoAccess    = OCSP;URI:\${OCSP_URL}
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ ext_device_noaia ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
EOF

EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
RSA=(-newkey rsa:2048)

# Self-signed CA: NAME CN
self_signed_ca() {
    run openssl req -config ca.cnf -x509 "${EC[@]}" -noenc -keyout "$1.key" -out "$1.pem" \
        -subj "/CN=$2" -days 3650 -sha256 -set_serial "0x$(rand_hex)" -extensions ext_root_ca
}

# Key + CSR: NAME CN KEYARGS... (CSR goes to the work dir).
new_csr() {
    local name=$1 cn=$2; shift 2
    run openssl req -config ca.cnf -new "$@" -noenc -keyout "$name.key" -out "$WORK/$name.csr" -subj "/CN=$cn"
}

# Leaf issued by the issuing CA through its database: NAME EXT [openssl ca args...]
# NAME.pem = leaf followed by the issuing CA (full chain file).
issue() {
    local name=$1 ext=$2; shift 2
    run openssl ca -config ca.cnf -batch -notext -extensions "$ext" -in "$WORK/$name.csr" -out "$WORK/$name.crt" "$@"
    cat "$WORK/$name.crt" issuing-ca.pem >"$name.pem"
}

# --- keys and CSRs first; generated in parallel (the CA database is not touched).
pids=()
gen() { new_csr "$@" & pids+=($!); }
gen server             localhost                   "${EC[@]}"
gen server-rsa         localhost                   "${RSA[@]}"
gen server-muststaple  localhost                   "${EC[@]}"
gen ocsp-signer        "StapleGate Demo OCSP Signer" "${EC[@]}"
for d in device-1 device-2 device-3 device-revoked device-to-revoke device-expired device-noaia; do
    gen "$d" "$d" "${EC[@]}"
done
( self_signed_ca root-ca "StapleGate Demo Root CA" ) & pids+=($!)
( self_signed_ca rogue-ca "Rogue CA" ) & pids+=($!)
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
((failed == 0)) || die "key generation failed"

# --- issuing CA, signed by the root (not through the issuing CA's own database).
run openssl req -config ca.cnf "${EC[@]}" -noenc -keyout issuing-ca.key -out issuing-ca.pem \
    -subj "/CN=StapleGate Demo Issuing CA" -CA root-ca.pem -CAkey root-ca.key \
    -days 1825 -sha256 -set_serial "0x$(rand_hex)" -extensions ext_issuing_ca
cat issuing-ca.pem root-ca.pem >ca-chain.pem

# --- device issued by the rogue CA (leaf only: the rogue CA is a root).
run openssl req -config ca.cnf "${EC[@]}" -noenc -keyout device-rogue.key -out device-rogue.pem \
    -subj "/CN=device-rogue" -CA rogue-ca.pem -CAkey rogue-ca.key \
    -days 365 -sha256 -set_serial "0x$(rand_hex)" -extensions ext_device

# --- everything else through `openssl ca`, so index.txt lists it.
issue server            ext_server            -days 730
issue server-rsa        ext_server_rsa        -days 730
issue server-muststaple ext_server_muststaple -days 730
issue ocsp-signer       ext_ocsp_signer       -days 730
# The signer file holds only the signer certificate (what -rsigner expects).
cp "$WORK/ocsp-signer.crt" ocsp-signer.pem
for d in device-1 device-2 device-3 device-revoked device-to-revoke; do
    issue "$d" ext_device -days 365
done
issue device-noaia   ext_device_noaia -days 365
issue device-expired ext_device -startdate 20200101000000Z -enddate 20210101000000Z

run openssl ca -config ca.cnf -revoke device-revoked.pem -crl_reason keyCompromise

chmod 0600 ./*.key
chmod 0644 ./*.pem ca.cnf index.txt* serial* "$MARKER" newcerts/*
chmod 0755 . newcerts

BUILDING=""
q() { printf '%q' "$1"; }
cat <<EOF
Demo PKI written to $OUT (OCSP URL in certificates: $URL)
Serve its OCSP responses with:
openssl ocsp -index $(q "$OUT/index.txt") -CA $(q "$OUT/issuing-ca.pem") -rsigner $(q "$OUT/ocsp-signer.pem") -rkey $(q "$OUT/ocsp-signer.key") -port $PORT -nmin 5 -multi 2
EOF
