"""Schemathesis hooks for tests/schemathesis.rs (loaded through SCHEMATHESIS_HOOKS).

POST /api/v1/recipients/import takes the certificate file as it is: PEM, DER
or PKCS#7 (.p7b), documented as application/x-pem-file, application/pkix-cert
and application/pkcs7-mime. Schemathesis has no serializer for those media
types and would report "Serialization not possible" instead of testing the
operation: send the generated value as raw bytes, as for
application/octet-stream. The same for the OCSP responder's
application/ocsp-request (RFC 6960): random bytes must get a
malformedRequest answer, never a server error.
"""

import schemathesis

schemathesis.serializer.alias(
    [
        "application/x-pem-file",
        "application/pkix-cert",
        "application/pkcs7-mime",
        "application/ocsp-request",
    ],
    "application/octet-stream",
)
