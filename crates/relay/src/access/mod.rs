//! Who is asking, and what they may do: principals (the bootstrap admin
//! token, service accounts, people signed in through the identity
//! provider), roles in teams, and the one table of what each route needs.
//! The HTTP edge (`http::authorize`) and the console apply them.

pub mod oidc;
pub mod personal;
pub mod principal;
pub mod rules;
pub mod trail;
