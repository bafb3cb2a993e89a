"""The demo shop: payment, stock and delivery participants for the order machine."""
