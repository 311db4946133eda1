"""Training loops: small functions that return losses; the caller owns IO and tracking."""
