//! Module paths of parameters (`layers.0.fc1.weight`), tracked while visiting a module.
//!
//! burn 0.21 calls `enter_module` / `exit_module` with each field name (parameter fields
//! included) but never its `visit_float_with_path`, so the stack is kept here, once, and
//! used by the optimizer (selection, error messages) and by sparsity reports.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

/// Whether `path` names a batch-norm running statistic (`*.running_mean`, `*.running_var`).
///
/// burn keeps these buffers as float `Param`s, so module visitors (and `num_params()`) see them,
/// but they are not trained weights: they get no gradient and are left out of sparsity counts.
pub fn is_running_statistic(path: &str) -> bool {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    leaf == "running_mean" || leaf == "running_var"
}

/// Something that wants every float parameter together with its dotted path.
pub trait PathVisitor<B: Backend> {
    /// Called once per float parameter, in module order.
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>);
}

/// Visit every float parameter of `module` with its path.
pub fn visit_with_paths<B: Backend, M: Module<B>, V: PathVisitor<B>>(module: &M, visitor: &mut V) {
    let mut walker = Walker {
        stack: Vec::new(),
        inner: visitor,
    };
    module.visit(&mut walker);
}

/// Something that maps every float parameter, knowing its dotted path.
pub trait PathMapper<B: Backend> {
    /// Called once per float parameter, in module order; returns the new parameter.
    fn map<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>>;
}

/// Map every float parameter of `module` with its path.
pub fn map_with_paths<B: Backend, M: Module<B>, P: PathMapper<B>>(module: M, mapper: &mut P) -> M {
    let mut walker = Walker {
        stack: Vec::new(),
        inner: mapper,
    };
    module.map(&mut walker)
}

/// The path stack as a [`burn::module::ModuleMapper`]/visitor helper.
#[derive(Debug, Default, Clone)]
pub struct PathStack(Vec<String>);

impl PathStack {
    /// Enter a field.
    pub fn push(&mut self, name: &str) {
        self.0.push(name.to_string());
    }

    /// Leave a field.
    pub fn pop(&mut self) {
        self.0.pop();
    }

    /// The current dotted path.
    pub fn current(&self) -> String {
        self.0.join(".")
    }
}

struct Walker<'a, V> {
    stack: Vec<String>,
    inner: &'a mut V,
}

impl<B: Backend, V: PathVisitor<B>> ModuleVisitor<B> for Walker<'_, V> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.inner.visit(&self.stack.join("."), param);
    }
}

impl<B: Backend, P: PathMapper<B>> ModuleMapper<B> for Walker<'_, P> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        self.inner.map(&self.stack.join("."), param)
    }
}
