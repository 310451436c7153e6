"""DKIM: keys, canonicalisation, signing at OpenSSL speed, rotation and status.

`canon` (RFC 6376 canonicalisation and signed-header selection), `keys` (key files, keygen,
DNS records), `store` (keys parsed once, which selector signs when), `signer`, `status`.
Never does: delivery, storage, or DNS lookups.
"""
