//! How the tests configure delivery channels: the XMPP service account, the SMTP relay and
//! Twilio's API served by a [`crate::Recorder`].

use anyhow::Result;

use crate::Recorder;

/// Twilio's Messages resource path for the tests' account.
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";

pub fn twilio_path() -> String {
    format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
}

/// tocsin's XMPP account on a test Prosody: register it with [`xmpp_service`].
pub const XMPP_SERVICE: &str = "tocsin@localhost";

const XMPP_SERVICE_PASSWORD: &str = "service-password";

/// Create tocsin's account on `prosody` and return the XMPP channel's settings for it
/// (plain text on loopback, a 2 s keep-alive so that a server restart is noticed quickly).
pub fn xmpp_service(
    prosody: &tocsin_testkit::Prosody,
) -> Result<tocsin_delivery::xmpp::XmppConfig> {
    prosody.register("tocsin", XMPP_SERVICE_PASSWORD)?;
    Ok(tocsin_delivery::xmpp::XmppConfig {
        jid: XMPP_SERVICE.into(),
        password: XMPP_SERVICE_PASSWORD.into(),
        server: prosody.addr(),
        tls: tocsin_delivery::xmpp::XmppTls::None,
        send_timeout_secs: 5,
        rate_per_sec: 0.0,
        keepalive_secs: 2,
    })
}

/// The e-mail channel, through the SMTP server on 127.0.0.1:`port`.
pub fn smtp_out(port: u16) -> tocsin_delivery::email::SmtpConfig {
    tocsin_delivery::email::SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        tls: tocsin_delivery::email::SmtpTls::None,
        from: "tocsin <notify@tocsin.test>".into(),
        timeout_secs: 5,
        ..Default::default()
    }
}

/// Point the SMS channel at a Twilio stand-in that accepts every message.
pub fn use_twilio(d: &mut tocsin_delivery::DeliveryConfig, twilio: &Recorder) {
    twilio.answer(&twilio_path(), 201, r#"{"sid":"SM0123","status":"queued"}"#);
    d.sms = tocsin_delivery::sms::SmsConfig {
        provider: tocsin_delivery::sms::SmsProvider::Twilio,
        twilio_base_url: twilio.base.clone(),
        twilio_account_sid: TWILIO_SID.into(),
        twilio_auth_token: "twilio-auth-token".into(),
        twilio_from: "+15550009999".into(),
        rate_per_sec: 0.0,
        ..Default::default()
    };
}
