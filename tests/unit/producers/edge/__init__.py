"""Unit tests of the edge daemon."""
