"""The message model: enqueue intake and validation, addresses, RFC 5322 rendering, VERP.

Owns: turning one enqueue payload into a stored `NewMessage` (rendered once, at enqueue) and the
VERP envelope sender. Never does: storage, signing or delivery.
"""
