//! The commands beside `serve`, as library functions the binary's thin `main` calls (and the
//! tests call directly): [`tools`] (`tail`, `publish`, `token`), [`webhook`] (`webhook sign|send`)
//! and [`typescript`] (`catalog --typescript`).

pub mod tools;
pub mod typescript;
pub mod webhook;
