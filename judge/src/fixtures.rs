//! Hand-made melodies the unit tests judge (test builds only).

use musicrl_music::tokens::{END, Event, encode};

/// Tokens of a melody given bar by bar as (MIDI pitch, twelfths) notes, ending with END.
pub fn tune(bars: &[Vec<(u8, u16)>]) -> Vec<u32> {
    let mut events = Vec::new();
    for (i, bar) in bars.iter().enumerate() {
        if i > 0 {
            events.push(Event::Bar);
        }
        for &(p, d) in bar {
            events.push(Event::Note {
                pitch: Some(p),
                twelfths: d,
            });
        }
    }
    let mut t = encode(&events);
    t.push(END);
    t
}

/// A D-major jig in 6/8: a pickup, quarter–eighth figures and running eighths, ending on D.
pub fn d_major_jig() -> Vec<u32> {
    let figure = |a: u8, b: u8, c: u8, d: u8| vec![(a, 12), (b, 6), (c, 12), (d, 6)];
    let run = |p: [u8; 6]| p.iter().map(|&x| (x, 6)).collect::<Vec<_>>();
    tune(&[
        vec![(69, 6)],
        figure(74, 73, 74, 69),
        run([66, 69, 66, 62, 66, 69]),
        figure(71, 69, 71, 73),
        run([74, 73, 71, 69, 66, 64]),
        figure(62, 64, 66, 69),
        run([71, 69, 66, 64, 62, 64]),
        figure(66, 64, 66, 69),
        vec![(62, 36)],
    ])
}
