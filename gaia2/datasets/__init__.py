"""Readers of public driving datasets in their own layouts, turning them into clip records."""
