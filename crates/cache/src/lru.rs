//! The recency order of one shard: a doubly linked list threaded through a
//! slab of nodes (indices, not pointers), so that adding, touching and
//! removing an entry are O(1) and freed nodes are reused.

/// No node.
const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Node<T> {
    prev: usize,
    next: usize,
    value: Option<T>,
}

/// Values ordered from most to least recently used.
#[derive(Debug)]
pub(crate) struct Lru<T> {
    nodes: Vec<Node<T>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used.
    tail: usize,
    len: usize,
}

impl<T> Lru<T> {
    pub(crate) fn new() -> Self {
        Lru { nodes: Vec::new(), free: Vec::new(), head: NIL, tail: NIL, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `value` as the most recently used; returns its index.
    pub(crate) fn push_front(&mut self, value: T) -> usize {
        let node = Node { prev: NIL, next: self.head, value: Some(value) };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        if self.head != NIL {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
        self.len += 1;
        i
    }

    /// Makes the value at `i` the most recently used.
    pub(crate) fn touch(&mut self, i: usize) {
        if self.get(i).is_none() || self.head == i {
            return;
        }
        self.unlink(i);
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        if self.head != NIL {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    /// Removes and returns the value at `i`.
    pub(crate) fn remove(&mut self, i: usize) -> Option<T> {
        let value = self.nodes.get_mut(i)?.value.take()?;
        self.unlink(i);
        self.free.push(i);
        self.len -= 1;
        Some(value)
    }

    /// The index of the least recently used value.
    pub(crate) fn back(&self) -> Option<usize> {
        (self.tail != NIL).then_some(self.tail)
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.nodes.get(i)?.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.nodes.get_mut(i)?.value.as_mut()
    }

    /// Indices and values from most to least recently used.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        let mut i = self.head;
        std::iter::from_fn(move || {
            let node = self.nodes.get(i)?;
            let at = i;
            i = node.next;
            node.value.as_ref().map(|v| (at, v))
        })
    }

    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        self.len = 0;
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(l: &Lru<u32>) -> Vec<u32> {
        l.iter().map(|(_, v)| *v).collect()
    }

    #[test]
    fn touch_moves_to_front_and_back_is_least_recent() {
        let mut l = Lru::new();
        let a = l.push_front(1);
        let b = l.push_front(2);
        let c = l.push_front(3);
        assert_eq!(order(&l), [3, 2, 1]);
        assert_eq!(l.back(), Some(a));
        l.touch(a);
        assert_eq!(order(&l), [1, 3, 2]);
        assert_eq!(l.back(), Some(b));
        assert_eq!(l.remove(c), Some(3));
        assert_eq!(l.remove(c), None);
        assert_eq!(order(&l), [1, 2]);
        let d = l.push_front(4);
        assert_eq!(d, c, "a freed node is reused");
        assert_eq!(order(&l), [4, 1, 2]);
        assert_eq!(l.len(), 3);
        l.remove(b);
        l.remove(a);
        l.remove(d);
        assert_eq!(l.back(), None);
        assert_eq!(l.len(), 0);
        assert!(order(&l).is_empty());
    }
}
