//! The payment service's own tests: wallets over HTTP and its saga handler (charge, refuse,
//! refund, forged totals) on a database of its own, without a broker or the other services.

mod helpers;
mod saga;
mod wallets;
