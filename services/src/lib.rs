//! Ingestion connectors (Shopify, Xero, Amazon, Unleashed); see the issue tracker.
