//! A deployment's targets drawn as their `dependsOn` graph: each target in
//! the column after its deepest dependency, in file order within a column,
//! with an arrow from each dependency. The template draws it as SVG.

/// One target as the graph takes it.
pub struct Node<'a> {
    pub name: &'a str,
    pub depends_on: &'a [String],
}

pub struct Graph {
    pub width: u32,
    pub height: u32,
    pub boxes: Vec<Placed>,
    pub edges: Vec<Edge>,
}

/// A target's box, by its index in the input.
pub struct Placed {
    pub index: usize,
    pub x: u32,
    pub y: u32,
}

/// An arrow from a dependency's right edge to its dependant's left edge.
pub struct Edge {
    pub path: String,
}

pub const BOX_WIDTH: u32 = 190;
pub const BOX_HEIGHT: u32 = 52;
const COLUMN_GAP: u32 = 56;
const ROW_GAP: u32 = 16;
const MARGIN: u32 = 4;

pub fn layout(nodes: &[Node<'_>]) -> Graph {
    let index_of = |name: &str| nodes.iter().position(|n| n.name == name);
    // Columns by longest path from a root. A file's graph is acyclic (it is
    // checked when the deployment starts); the pass count bounds it anyway.
    let mut column = vec![0u32; nodes.len()];
    for _ in 0..nodes.len() {
        let mut moved = false;
        for (i, node) in nodes.iter().enumerate() {
            let deepest = node.depends_on.iter().filter_map(|d| index_of(d)).map(|d| column[d] + 1).max().unwrap_or(0);
            // A cycle could only push columns on: keep them within the graph.
            let deepest = deepest.min(nodes.len().saturating_sub(1) as u32);
            if deepest > column[i] {
                column[i] = deepest;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut rows_used = vec![0u32; nodes.len().max(1)];
    let mut boxes = Vec::with_capacity(nodes.len());
    for (index, &col) in column.iter().enumerate() {
        let row = rows_used[col as usize];
        rows_used[col as usize] += 1;
        boxes.push(Placed {
            index,
            x: MARGIN + col * (BOX_WIDTH + COLUMN_GAP),
            y: MARGIN + row * (BOX_HEIGHT + ROW_GAP),
        });
    }
    let mut edges = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for dep in node.depends_on.iter().filter_map(|d| index_of(d)) {
            let (from, to) = (&boxes[dep], &boxes[i]);
            let (x1, y1) = (from.x + BOX_WIDTH, from.y + BOX_HEIGHT / 2);
            let (x2, y2) = (to.x - 2, to.y + BOX_HEIGHT / 2);
            let mid = (x1 + x2) / 2;
            edges.push(Edge { path: format!("M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}") });
        }
    }
    let columns = column.iter().max().map_or(0, |c| c + 1);
    let rows = rows_used.iter().max().copied().unwrap_or(0);
    Graph {
        width: 2 * MARGIN + columns * BOX_WIDTH + columns.saturating_sub(1) * COLUMN_GAP,
        height: 2 * MARGIN + rows * BOX_HEIGHT + rows.saturating_sub(1) * ROW_GAP,
        boxes,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_stands_after_its_deepest_dependency() {
        let deps = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (none, a, ab) = (deps(&[]), deps(&["staging"]), deps(&["staging", "canary"]));
        let nodes = [
            Node { name: "prod", depends_on: &ab },
            Node { name: "staging", depends_on: &none },
            Node { name: "canary", depends_on: &a },
        ];
        let graph = layout(&nodes);
        let x = |i: usize| graph.boxes[i].x;
        assert!(x(1) < x(2) && x(2) < x(0), "staging, then canary, then prod");
        assert_eq!(graph.edges.len(), 3);
        assert_eq!(graph.width, 2 * MARGIN + 3 * BOX_WIDTH + 2 * COLUMN_GAP);
        assert_eq!(graph.height, 2 * MARGIN + BOX_HEIGHT);
    }

    #[test]
    fn a_cycle_is_laid_out_within_the_graph() {
        let (a, b) = (vec!["b".to_string()], vec!["a".to_string()]);
        let graph = layout(&[Node { name: "a", depends_on: &a }, Node { name: "b", depends_on: &b }]);
        assert!(graph.boxes.iter().all(|placed| placed.x + BOX_WIDTH <= graph.width));
    }
}
