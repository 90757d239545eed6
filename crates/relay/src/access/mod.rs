//! Who is asking, and what they may do: principals (the bootstrap admin
//! token, service accounts), roles in teams, and the one table of what each
//! route needs. The HTTP edge (`http::authorize`) applies them.

pub mod principal;
pub mod rules;
