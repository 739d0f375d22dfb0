//! Undo for a failing ADD: each step that creates something registers how to
//! remove it; unless the ADD completes, the steps run in reverse order. The
//! reference leaves the veth (and more) behind and relies on a later DEL.

type Undo<'a> = Box<dyn FnOnce() -> Result<(), String> + 'a>;

#[derive(Default)]
pub struct Rollback<'a> {
    steps: Vec<(&'static str, Undo<'a>)>,
}

impl<'a> Rollback<'a> {
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
                eprintln!("bridge: undoing {what} after a failed ADD: {e}");
            }
        }
    }
}
