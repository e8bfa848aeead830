//! The least of Stripe the `webhooks` scenario needs: `POST /v1/payment_intents` answered with
//! Stripe's `payment_intent` shape (the same intent again for the same order, as Stripe's
//! idempotency keys would), and a record of the intents it created, to send their
//! `payment_intent.succeeded` webhooks. Plain HTTP/1.1 with keep-alive on a tokio listener:
//! the load tool has no web framework, and the server's client needs nothing more. Anything
//! else is answered 404 in Stripe's error format.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// An intent the stand-in created.
#[derive(Debug, Clone)]
pub struct Intent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub order_id: String,
}

impl Intent {
    /// The `payment_intent` object, with `status`.
    pub fn object(&self, status: &str) -> Value {
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "currency": self.currency,
            "status": status,
            "client_secret": format!("{}_secret_bench", self.id),
            "metadata": { "order_id": self.order_id },
        })
    }
}

/// Intents by order id.
#[derive(Clone, Default)]
pub struct Intents(Arc<Mutex<HashMap<String, Intent>>>);

impl Intents {
    pub fn get(&self, order_id: &str) -> Option<Intent> {
        self.0.lock().unwrap().get(order_id).cloned()
    }

    fn create(&self, form: &HashMap<String, String>) -> Option<Intent> {
        let order_id = form.get("metadata[order_id]")?.clone();
        let amount = form.get("amount")?.parse().ok()?;
        let currency = form.get("currency")?.clone();
        let mut intents = self.0.lock().unwrap();
        let intent = intents.entry(order_id.clone()).or_insert_with(|| Intent {
            id: format!("pi_{}", Uuid::new_v4().simple()),
            amount,
            currency,
            order_id,
        });
        Some(intent.clone())
    }
}

/// Listens on `addr` (where the server's `STRIPE_API_BASE` points) until the process ends.
pub async fn start(addr: &str) -> anyhow::Result<Intents> {
    let listener = TcpListener::bind(addr).await?;
    let intents = Intents::default();
    let served = intents.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, served.clone()));
        }
    });
    Ok(intents)
}

async fn serve(stream: TcpStream, intents: Intents) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let (status, answer) = match (method.as_str(), path.as_str()) {
            ("POST", "/v1/payment_intents") => {
                match intents.create(&form(&String::from_utf8_lossy(&body))) {
                    Some(intent) => ("200 OK", intent.object("requires_payment_method")),
                    None => ("400 Bad Request", error("parameter_missing")),
                }
            }
            _ => ("404 Not Found", error("resource_missing")),
        };
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        write.write_all(response.as_bytes()).await?;
    }
}

fn error(code: &str) -> Value {
    json!({ "error": { "type": "invalid_request_error", "code": code, "message": code } })
}

/// An `application/x-www-form-urlencoded` body.
fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_with_brackets_is_decoded() {
        let form = form("amount=2500&currency=eur&metadata%5Border_id%5D=abc&x=a+b%2");
        assert_eq!(form["metadata[order_id]"], "abc");
        assert_eq!(form["amount"], "2500");
        assert_eq!(form["x"], "a b%2");
    }
}
