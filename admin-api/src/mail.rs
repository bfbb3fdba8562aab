//! The e-mails of the flows (activation, approval, certificate), built with
//! lettre (plain text and HTML, Danish with an English summary) and sent
//! through the configured relay, by default the gateway's own outbound
//! listener (which signs them with the organisation's key when the policy
//! says so).
//!
//! A mail that cannot be sent fails the request that wanted it only after
//! the change is made: the response says so, and the administrator can
//! send the link again (`resend-activation`, ordering again).

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};

use crate::pages::esc;

/// Where and how mail goes.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// The relay's host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The sender.
    pub from: String,
}

/// One e-mail to send.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Recipient name.
    pub to_name: String,
    /// Subject.
    pub subject: String,
    /// Paragraphs (plain text).
    pub paragraphs: Vec<String>,
    /// The link to follow, with its label.
    pub link: Option<(String, String)>,
}

impl Mail {
    /// The message, as lettre builds it.
    pub fn build(&self, from: &str) -> Result<Message, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("sender {from:?}: {e}"))?;
        let to = Mailbox::new(
            Some(self.to_name.clone()).filter(|n| !n.is_empty()),
            self.to
                .parse()
                .map_err(|e| format!("recipient {:?}: {e}", self.to))?,
        );
        let mut text = String::new();
        let mut html = String::from(
            "<!doctype html><html lang=\"da\"><head><meta charset=\"utf-8\"></head>\
             <body style=\"font-family:sans-serif\">",
        );
        for p in &self.paragraphs {
            text.push_str(p);
            text.push_str("\n\n");
            html.push_str(&format!("<p>{}</p>", esc(p)));
        }
        if let Some((label, url)) = &self.link {
            text.push_str(&format!("{label}:\n{url}\n\n"));
            html.push_str(&format!(
                "<p><a href=\"{}\">{}</a></p>",
                esc(url),
                esc(label)
            ));
        }
        text.push_str("-- \nsikkermail\n");
        html.push_str("</body></html>");
        Message::builder()
            .from(from)
            .to(to)
            .subject(self.subject.clone())
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| e.to_string())
    }
}

/// Sends `mail` through the relay. Errors are text for the response.
pub async fn send(cfg: &MailConfig, mail: &Mail) -> Result<(), String> {
    let msg = mail.build(&cfg.from)?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
        .port(cfg.port)
        .timeout(Some(Duration::from_secs(30)))
        .build();
    match transport.send(msg).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(relay = %cfg.host, port = cfg.port, error = %e, "admin e-mail not sent");
            Err(format!("the e-mail could not be sent: {e}"))
        }
    }
}

/// What every mail-sending handler reports.
pub async fn send_opt(cfg: Option<&MailConfig>, mail: &Mail) -> Result<(), String> {
    match cfg {
        Some(c) => send(c, mail).await,
        None => Err("no mail relay is configured".into()),
    }
}
