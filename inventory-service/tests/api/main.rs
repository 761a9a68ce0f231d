//! The inventory service's own tests: products over HTTP and its saga handler (reserve every line
//! or none, forged quantities) on a database of its own, without a broker or the other services.

mod saga;
