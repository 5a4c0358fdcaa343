//! A line diff (longest common subsequence) for comparing policy template versions.

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// `' '` unchanged, `'-'` only in the old text, `'+'` only in the new one.
    pub tag: char,
    pub text: String,
    pub class: &'static str,
}

/// Longest texts compared line by line; beyond that the diff is old-then-new (templates are
/// limited to 4096 rendered characters, so this is never reached in practice).
const MAX_LINES: usize = 4000;

pub fn diff_lines(old: &str, new: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let line = |tag: char, text: &str| DiffLine {
        tag,
        text: text.to_owned(),
        class: match tag {
            '+' => "add",
            '-' => "del",
            _ => "same",
        },
    };
    if a.len() > MAX_LINES || b.len() > MAX_LINES {
        return a
            .iter()
            .map(|l| line('-', l))
            .chain(b.iter().map(|l| line('+', l)))
            .collect();
    }
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(line(' ', a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(line('-', a[i]));
            i += 1;
        } else {
            out.push(line('+', b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| line('-', l)));
    out.extend(b[j..].iter().map(|l| line('+', l)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_lines() {
        let d = diff_lines("a\nb\nc\n", "a\nx\nc\nd\n");
        let tags: String = d.iter().map(|l| l.tag).collect();
        let texts: Vec<&str> = d.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(tags, " -+ +");
        assert_eq!(texts, ["a", "b", "x", "c", "d"]);
        assert!(diff_lines("same", "same").iter().all(|l| l.tag == ' '));
        assert_eq!(diff_lines("", "new")[0].class, "add");
    }
}
