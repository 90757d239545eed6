//! The web console driven over plain HTTP, for the Rust tests that check
//! what a page says or does without a browser (the browser tests are in
//! `tests/console`): a session signed in with the admin token, pages read
//! with it, and forms posted with its CSRF token.

/// One signed-in console session against one relay (or any replica).
pub struct Console {
    client: reqwest::Client,
    cookie: String,
}

impl Console {
    /// Signs in at `base` (the relay's HTTP URL) with `admin_token`.
    pub async fn sign_in(base: &str, admin_token: &str) -> Self {
        let client = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let reply = client.post(format!("{base}/sign-in")).form(&[("token", admin_token)]).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), 303, "sign-in at {base}");
        let cookie = reply
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.split(';').next().filter(|pair| pair.starts_with("borealis_console=")))
            .expect("a session cookie")
            .to_owned();
        Self { client, cookie }
    }

    /// `GET url` with the session: the status and the page.
    pub async fn get(&self, url: &str) -> (u16, String) {
        let reply = self.client.get(url).header("cookie", &self.cookie).send().await.unwrap();
        (reply.status().as_u16(), reply.text().await.unwrap())
    }

    /// The CSRF token on a page the session read.
    pub fn csrf(page: &str) -> String {
        let start =
            page.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + r#"name="csrf" value=""#.len();
        page[start..].split('"').next().unwrap().to_owned()
    }

    /// Posts a form to `url` with the session and `csrf`: the status and,
    /// for a redirect, where it leads.
    pub async fn post(&self, url: &str, csrf: &str, fields: &[(&str, &str)]) -> (u16, Option<String>) {
        let mut form = vec![("csrf", csrf)];
        form.extend_from_slice(fields);
        let reply = self.client.post(url).header("cookie", &self.cookie).form(&form).send().await.unwrap();
        let location = reply.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_owned);
        (reply.status().as_u16(), location)
    }
}
