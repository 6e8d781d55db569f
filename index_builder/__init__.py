"""Offline half: turn factor matrices into verified, versioned Annoy publications."""
