//! One object read from several places that hold the same bytes (peer
//! nodes), with an origin behind them: each range goes to the least busy
//! place still trusted, a place that fails or sends bytes that do not
//! match is dropped for the rest of the transfer, and once none is left
//! the origin serves what remains.
//!
//! The digests that decide which bytes are good come from the caller
//! ([`crate::Expected`]), never from the places themselves.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::error::TransferError;
use crate::source::{Remote, Sink, Source};

/// What one place did during a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub place: String,
    /// Bytes it delivered (including any later refused).
    pub bytes: u64,
    /// Why it was dropped, if it was.
    pub dropped: Option<String>,
    /// Whether this is the origin rather than a peer.
    pub origin: bool,
}

/// Several places holding one object of known size and SHA-256.
pub struct Spread {
    described: String,
    size: u64,
    sha256: String,
    peers: Vec<Box<dyn Source>>,
    origin: Option<Box<dyn Source>>,
    /// The origin's own validator, probed when it is first needed.
    origin_validator: OnceLock<Option<String>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per peer: why it was dropped, if it was.
    dropped: Vec<Option<String>>,
    /// Per place (peers, then the origin): reads running now.
    busy: Vec<usize>,
    /// Per place: bytes delivered.
    bytes: Vec<u64>,
    /// Which place served the range starting at each offset, last.
    served_by: HashMap<u64, usize>,
}

impl Spread {
    /// `peers` are tried first; `origin`, when given, serves whatever no
    /// trusted peer is left for.
    pub fn new(
        described: String,
        size: u64,
        sha256: &str,
        peers: Vec<Box<dyn Source>>,
        origin: Option<Box<dyn Source>>,
    ) -> Spread {
        let places = peers.len() + 1;
        Spread {
            described,
            size,
            sha256: sha256.to_ascii_lowercase(),
            state: Mutex::new(State {
                dropped: vec![None; peers.len()],
                busy: vec![0; places],
                bytes: vec![0; places],
                served_by: HashMap::new(),
            }),
            peers,
            origin,
            origin_validator: OnceLock::new(),
        }
    }

    /// What each place did so far: peers in order, then the origin.
    pub fn served(&self) -> Vec<Served> {
        let state = self.lock();
        let mut served: Vec<Served> = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| Served {
                place: p.describe(),
                bytes: state.bytes[i],
                dropped: state.dropped[i].clone(),
                origin: false,
            })
            .collect();
        if let Some(origin) = &self.origin {
            served.push(Served {
                place: origin.describe(),
                bytes: state.bytes[self.peers.len()],
                dropped: None,
                origin: true,
            });
        }
        served
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The least busy trusted peer (the lowest index among equals), or
    /// the origin's index once no peer is trusted; marked busy.
    fn take(&self) -> Option<usize> {
        let mut state = self.lock();
        let peer = (0..self.peers.len())
            .filter(|&i| state.dropped[i].is_none())
            .min_by_key(|&i| state.busy[i]);
        let place = match peer {
            Some(i) => i,
            None if self.origin.is_some() => self.peers.len(),
            None => return None,
        };
        state.busy[place] += 1;
        Some(place)
    }

    fn drop_peer(&self, index: usize, why: String) {
        let mut state = self.lock();
        if index < self.peers.len() && state.dropped[index].is_none() {
            tracing::warn!(peer = %self.peers[index].describe(), object = %self.described, reason = %why, "dropping this peer for the rest of the transfer");
            state.dropped[index] = Some(why);
        }
    }

    fn origin_validator(&self, origin: &dyn Source) -> Result<Option<String>, TransferError> {
        if let Some(v) = self.origin_validator.get() {
            return Ok(v.clone());
        }
        let remote = origin.probe()?;
        if remote.size.is_some_and(|s| s != self.size) {
            return Err(TransferError::SizeMismatch {
                what: origin.describe(),
                expected: self.size,
                actual: remote.size.unwrap_or_default(),
            });
        }
        if !remote.ranges {
            // Not `RangeIgnored`: that would make the transfer start over
            // on one connection, discarding the chunks peers sent.
            tracing::warn!(origin = %origin.describe(), "the origin cannot send ranges, so it cannot finish a pull from peers");
            return Err(TransferError::NoPlaceLeft {
                what: self.described.clone(),
            });
        }
        Ok(self
            .origin_validator
            .get_or_init(|| remote.validator)
            .clone())
    }
}

impl Source for Spread {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn probe(&self) -> Result<Remote, TransferError> {
        Ok(Remote {
            size: Some(self.size),
            ranges: true,
            // The bytes are named by their digest: they never change.
            validator: Some(format!("sha256:{}", self.sha256)),
            sha256: Some(self.sha256.clone()),
        })
    }

    fn read(
        &self,
        range: Option<(u64, u64)>,
        _validator: Option<&str>,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError> {
        let range = range.unwrap_or((0, self.size));
        loop {
            let Some(place) = self.take() else {
                return Err(TransferError::NoPlaceLeft {
                    what: self.described.clone(),
                });
            };
            let mut delivered = 0u64;
            // The sink's own failure (a full disk) is not the place's.
            let mut local: Option<TransferError> = None;
            let mut pass = |bytes: &[u8]| match sink(bytes) {
                Ok(()) => {
                    delivered += bytes.len() as u64;
                    Ok(())
                }
                Err(err) => {
                    local = Some(err);
                    Err(TransferError::Cancelled)
                }
            };
            let result = if place == self.peers.len() {
                let origin = self
                    .origin
                    .as_deref()
                    .expect("take gives the origin only when there is one");
                self.origin_validator(origin)
                    .and_then(|validator| origin.read(Some(range), validator.as_deref(), &mut pass))
            } else {
                self.peers[place].read(Some(range), None, &mut pass)
            };
            if let Some(err) = local {
                let mut state = self.lock();
                state.busy[place] -= 1;
                state.bytes[place] += delivered;
                return Err(err);
            }
            {
                let mut state = self.lock();
                state.busy[place] -= 1;
                state.bytes[place] += delivered;
                state.served_by.insert(range.0, place);
            }
            match result {
                Ok(()) => return Ok(()),
                Err(err) if place == self.peers.len() => return Err(err),
                Err(TransferError::Cancelled) => return Err(TransferError::Cancelled),
                Err(err) => {
                    self.drop_peer(place, err.to_string());
                    if delivered > 0 {
                        // The sink holds part of the range: the transfer
                        // starts it again, from the next place.
                        return Err(TransferError::Connection {
                            url: self.peers[place].describe(),
                            reason: format!("dropped mid-range: {err}"),
                        });
                    }
                }
            }
        }
    }

    fn rejected(&self, range: (u64, u64), err: &TransferError) {
        let place = self.lock().served_by.get(&range.0).copied();
        if let Some(place) = place.filter(|&p| p < self.peers.len()) {
            self.drop_peer(place, format!("sent bad bytes: {err}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A place holding `bytes` (or failing every read).
    struct Held {
        name: &'static str,
        bytes: Option<Vec<u8>>,
    }

    impl Source for Held {
        fn describe(&self) -> String {
            self.name.to_string()
        }
        fn probe(&self) -> Result<Remote, TransferError> {
            Ok(Remote {
                size: self.bytes.as_ref().map(|b| b.len() as u64),
                ranges: true,
                validator: None,
                sha256: None,
            })
        }
        fn read(
            &self,
            range: Option<(u64, u64)>,
            _: Option<&str>,
            sink: &mut Sink<'_>,
        ) -> Result<(), TransferError> {
            let (start, end) = range.expect("ranged");
            match &self.bytes {
                Some(b) => sink(&b[start as usize..end as usize]),
                None => Err(TransferError::Connection {
                    url: self.name.into(),
                    reason: "refused".into(),
                }),
            }
        }
    }

    fn held(name: &'static str, bytes: Option<&[u8]>) -> Box<dyn Source> {
        Box::new(Held {
            name,
            bytes: bytes.map(<[u8]>::to_vec),
        })
    }

    fn read(spread: &Spread, range: (u64, u64)) -> Result<Vec<u8>, TransferError> {
        let mut got = Vec::new();
        spread.read(Some(range), None, &mut |b| {
            got.extend_from_slice(b);
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn a_failing_peer_is_dropped_and_the_next_serves() {
        let data = b"0123456789";
        let spread = Spread::new(
            "x".into(),
            10,
            "ab",
            vec![held("a", None), held("b", Some(data))],
            None,
        );
        assert_eq!(read(&spread, (2, 5)).unwrap(), b"234");
        let served = spread.served();
        assert!(served[0].dropped.is_some());
        assert_eq!((served[1].bytes, served[1].dropped.clone()), (3, None));
    }

    #[test]
    fn a_peer_whose_bytes_are_rejected_is_not_asked_again() {
        let data = b"0123456789";
        let spread = Spread::new(
            "x".into(),
            10,
            "ab",
            vec![held("a", Some(data)), held("b", Some(data))],
            Some(held("origin", Some(data))),
        );
        read(&spread, (0, 5)).unwrap();
        let bad = TransferError::NoPlaceLeft { what: "x".into() };
        spread.rejected((0, 5), &bad);
        read(&spread, (0, 5)).unwrap();
        spread.rejected((0, 5), &bad);
        // Both peers gone: the origin serves.
        read(&spread, (5, 10)).unwrap();
        let served = spread.served();
        assert!(served[0].dropped.is_some() && served[1].dropped.is_some());
        assert_eq!((served[2].origin, served[2].bytes), (true, 5));
    }

    #[test]
    fn without_an_origin_no_place_left_is_an_error() {
        let spread = Spread::new("x".into(), 10, "ab", vec![held("a", None)], None);
        assert!(matches!(
            read(&spread, (0, 5)),
            Err(TransferError::NoPlaceLeft { .. })
        ));
    }

    #[test]
    fn reads_go_to_the_least_busy_peer() {
        let data = b"0123456789";
        let spread = Spread::new(
            "x".into(),
            10,
            "ab",
            vec![held("a", Some(data)), held("b", Some(data))],
            None,
        );
        // A read in flight on a: the next one goes to b.
        assert_eq!(spread.take(), Some(0));
        assert_eq!(spread.take(), Some(1));
    }
}
