//! MusicGen's "delay" pattern: codebook k is shifted right by k steps, so that at every
//! decoding step the model predicts codebook 0 of frame t, codebook 1 of frame t − 1, …
//!
//! For K codebooks and T frames the delayed grid has K rows and T + K positions:
//!
//! ```text
//! position      0    1     2     3    …   T      T+1  …  T+K-1
//! codebook 0    BOS  c0,0  c0,1  c0,2 …   c0,T-1 pad  …  pad
//! codebook 1    BOS  pad   c1,0  c1,1 …   c1,T-2 c1,T-1  pad
//! codebook k    BOS  pad×k then ck,0 … ck,T-1, then pad
//! ```
//!
//! Code `c[k][t]` sits at position `t + k + 1`; the decoder's logits at position `p`
//! predict position `p + 1`, so log p(c[k][t]) is read from row k at position `t + k`.
//! This is transformers' `build_delay_pattern_mask` for mono models (checked against its
//! greedy `generate`: see the parity fixture). Pure functions, no tensors.

use crate::PolicyError;

/// Number of positions in the delayed grid of `frames` frames over `n_codebooks`.
pub fn grid_len(frames: usize, n_codebooks: usize) -> usize {
    frames + n_codebooks
}

/// The grid position that holds code `t` of codebook `k`.
pub fn code_position(k: usize, t: usize) -> usize {
    t + k + 1
}

/// The frame whose code of codebook `k` sits at grid position `p`, if any.
pub fn frame_at(k: usize, p: usize, frames: usize) -> Option<usize> {
    let t = p.checked_sub(k + 1)?;
    (t < frames).then_some(t)
}

/// Codes `[K][T]` (as the codec takes them) to the delayed grid `[K][T + K]`.
pub fn delay(codes: &[Vec<u32>], bos: u32, pad: u32) -> Result<Vec<Vec<u32>>, PolicyError> {
    let frames = check_rectangular(codes)?;
    let k_total = codes.len();
    let len = grid_len(frames, k_total);
    Ok(codes
        .iter()
        .enumerate()
        .map(|(k, row)| {
            let mut out = vec![pad; len];
            out[0] = bos;
            out[k + 1..k + 1 + frames].copy_from_slice(row);
            out
        })
        .collect())
}

/// The inverse of [`delay`]: the codes `[K][T]` of a grid `[K][T + K]`. Refuses a grid
/// whose shape, BOS column or pad cells do not follow the pattern, naming the cell.
pub fn undelay(grid: &[Vec<u32>], bos: u32, pad: u32) -> Result<Vec<Vec<u32>>, PolicyError> {
    let len = check_rectangular(grid)?;
    let k_total = grid.len();
    let frames = len.checked_sub(k_total).ok_or_else(|| {
        PolicyError::InvalidInput(format!(
            "a delayed grid of {k_total} codebooks needs at least {k_total} positions, got {len}"
        ))
    })?;
    let mut codes = Vec::with_capacity(k_total);
    for (k, row) in grid.iter().enumerate() {
        for (p, &id) in row.iter().enumerate() {
            let expected = if p == 0 {
                Some(bos)
            } else if frame_at(k, p, frames).is_none() {
                Some(pad)
            } else {
                None
            };
            if let Some(want) = expected
                && id != want
            {
                return Err(PolicyError::InvalidInput(format!(
                    "delayed grid cell (codebook {k}, position {p}) holds {id}, the pattern puts {want} there"
                )));
            }
        }
        codes.push(row[k + 1..k + 1 + frames].to_vec());
    }
    Ok(codes)
}

/// The number of columns of a non-empty rectangular grid.
fn check_rectangular(rows: &[Vec<u32>]) -> Result<usize, PolicyError> {
    let first = rows
        .first()
        .ok_or_else(|| PolicyError::InvalidInput("no codebook rows".into()))?;
    let cols = first.len();
    if let Some((k, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != cols) {
        return Err(PolicyError::InvalidInput(format!(
            "codebook rows differ in length: row 0 has {cols}, row {k} has {}",
            row.len()
        )));
    }
    Ok(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u32 = 9; // BOS
    const P: u32 = 8; // pad

    #[test]
    fn three_codebooks_of_two_frames_by_hand() {
        let codes = vec![vec![1, 2], vec![3, 4], vec![5, 6]];
        let grid = delay(&codes, B, P).unwrap();
        assert_eq!(
            grid,
            vec![
                vec![B, 1, 2, P, P],
                vec![B, P, 3, 4, P],
                vec![B, P, P, 5, 6],
            ]
        );
        assert_eq!(undelay(&grid, B, P).unwrap(), codes);
        // The positions the module documents.
        for (k, row) in codes.iter().enumerate() {
            for (t, &c) in row.iter().enumerate() {
                assert_eq!(grid[k][code_position(k, t)], c);
                assert_eq!(frame_at(k, code_position(k, t), 2), Some(t));
            }
        }
        assert_eq!(frame_at(2, 2, 2), None);
        assert_eq!(frame_at(0, 3, 2), None);
    }

    #[test]
    fn one_codebook_is_a_plain_shift() {
        let codes = vec![vec![4, 5, 6]];
        let grid = delay(&codes, B, P).unwrap();
        assert_eq!(grid, vec![vec![B, 4, 5, 6]]);
        assert_eq!(undelay(&grid, B, P).unwrap(), codes);
    }

    #[test]
    fn zero_frames_is_bos_and_pads() {
        let codes = vec![vec![], vec![]];
        let grid = delay(&codes, B, P).unwrap();
        assert_eq!(grid, vec![vec![B, P], vec![B, P]]);
        assert_eq!(undelay(&grid, B, P).unwrap(), codes);
    }

    #[test]
    fn a_grid_off_the_pattern_is_refused_with_its_cell() {
        let mut grid = delay(&[vec![1, 2], vec![3, 4]], B, P).unwrap();
        grid[1][1] = 7; // codebook 1 has not started at position 1
        let err = undelay(&grid, B, P).unwrap_err().to_string();
        assert!(err.contains("codebook 1, position 1"), "{err}");
        let ragged = vec![vec![1, 2], vec![3]];
        assert!(delay(&ragged, B, P).is_err());
        assert!(undelay(&vec![vec![B]; 2], B, P).is_err());
    }
}
