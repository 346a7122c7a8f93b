//! The tiny HTTP/1.1 plumbing a fake service needs: accept on 127.0.0.1:0, read
//! one request per connection (`Content-Length` bodies only), answer it with
//! `Connection: close`, or drop the connection unanswered.
//!
//! Used by [`crate::fake_stripe`] and [`crate::fake_metronome`].

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    pub fn new(status: u16, body: String) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

/// What to do with a request.
pub(crate) enum Reply {
    Respond(Response),
    /// Close the connection without answering.
    Drop,
}

/// Bind 127.0.0.1:0 and serve every connection with `handler` from a background
/// task (dropping or aborting the handle stops the server and its connections).
pub(crate) async fn serve<H, F>(handler: H) -> (SocketAddr, JoinHandle<()>)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("fake server: bind");
    let addr = listener.local_addr().expect("fake server: local_addr");
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(handle_conn(stream, handler.clone()));
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    (addr, task)
}

async fn handle_conn<H, F>(stream: TcpStream, handler: H)
where
    H: Fn(Request) -> F,
    F: Future<Output = Reply>,
{
    let req = match read_request(&stream).await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(msg) => {
            let body = format!("{{\"message\":\"Invalid HTTP request: {msg}.\"}}");
            return write_response(&stream, &Response::new(400, body)).await;
        }
    };
    match handler(req).await {
        Reply::Respond(r) => write_response(&stream, &r).await,
        // Dropping the socket closes it without a reply.
        Reply::Drop => drop(stream),
    }
}

async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `Ok(None)`: the client closed before sending anything. `Err`: a malformed request.
async fn read_request(stream: &TcpStream) -> Result<Option<Request>, &'static str> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too large");
        }
        match read_some(stream, &mut buf).await {
            Ok(0) | Err(_) if buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err("truncated request head"),
            Ok(_) => {}
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "non-UTF-8 request head")?;
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let (method, target) = match (start.next(), start.next(), start.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => (m, t),
        _ => return Err("malformed request line"),
    };
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':').ok_or("malformed header")?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body: buf[head_end + 4..].to_vec(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err("chunked bodies are not supported, send Content-Length");
    }
    let len = req.header("content-length").unwrap_or("0");
    let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
    if len > MAX_BODY {
        return Err("body too large");
    }
    while req.body.len() < len {
        if let Ok(0) | Err(_) = read_some(stream, &mut req.body).await {
            return Err("truncated body");
        }
    }
    req.body.truncate(len);
    Ok(Some(req))
}

async fn write_response(stream: &TcpStream, r: &Response) {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        s if s >= 500 => "Server Error",
        _ => "Error",
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", r.status);
    out += &format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.body.len()
    );
    for (k, v) in &r.headers {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    out += &r.body;
    let _ = write_all(stream, out.as_bytes()).await;
}
