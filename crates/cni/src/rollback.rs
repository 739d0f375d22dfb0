//! Undo for a failing ADD: each step that creates something registers how to
//! remove it; unless the ADD completes, the steps run in reverse order. The
//! reference plugins leave what they made behind and rely on a later DEL.

type Undo<'a> = Box<dyn FnOnce() -> Result<(), String> + 'a>;

/// Steps to undo, newest first, unless [`Rollback::commit`] is called.
pub struct Rollback<'a> {
    plugin: &'static str,
    steps: Vec<(&'static str, Undo<'a>)>,
}

impl<'a> Rollback<'a> {
    /// A rollback whose failures are reported on stderr as `plugin`'s.
    pub fn new(plugin: &'static str) -> Self {
        Rollback {
            plugin,
            steps: Vec::new(),
        }
    }

    /// Remember how to undo `what`.
    pub fn push(&mut self, what: &'static str, undo: impl FnOnce() -> Result<(), String> + 'a) {
        self.steps.push((what, Box::new(undo)));
    }

    /// The ADD succeeded: keep everything.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        // Keep going on errors: one failed undo must not strand the rest.
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(e) = undo() {
                eprintln!("{}: undoing {what} after a failed ADD: {e}", self.plugin);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rollback;
    use std::cell::RefCell;

    #[test]
    fn undoes_in_reverse_unless_committed() {
        let log = RefCell::new(Vec::new());
        {
            let mut r = Rollback::new("test");
            r.push("a", || {
                log.borrow_mut().push("a");
                Ok(())
            });
            r.push("b", || {
                log.borrow_mut().push("b");
                Err("failed".into())
            });
        }
        assert_eq!(*log.borrow(), ["b", "a"]);
        let mut r = Rollback::new("test");
        r.push("c", || {
            log.borrow_mut().push("c");
            Ok(())
        });
        r.commit();
        assert_eq!(*log.borrow(), ["b", "a"]);
    }
}
