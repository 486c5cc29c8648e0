"""The task registry: for each ``data.task``, its row builder, students, metrics and prefix
placement. The one place that names a task: `engine.data` asks it for the row builder,
`engine.student.build_student` for the student of a ``student.tuning``, `engine.config` for the
metrics and the tunings.

Light on purpose (no torch import, no dataset code): `engine.config` imports it. Row builders
("module:function") and students ("module:Class") are named as strings and imported only when
a run loads data or builds a student, so this module imports neither `engine.data` nor
`engine.student`.

| task              | student                          | metrics (first = default)          |
|-------------------|----------------------------------|------------------------------------|
| classification    | encoder + sequence-class. head   | accuracy, macro_f1                 |
| extractive_qa     | encoder + span head (SQuAD)      | f1, exact_match                    |
| multiple_choice   | encoder + multiple-choice head   | accuracy                           |
| summarization     | seq2seq (BART)                   | neg_loss, rouge1, rouge2, rougeL   |

Summarization ranks prefixes by ``neg_loss`` (minus the teacher-forced token cross-entropy of
the reference summaries: cheap, higher is better) during the run and reports real ROUGE on the
test split; choosing a ROUGE metric ranks validation prefixes by generated summaries instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError, DataError

if TYPE_CHECKING:
    from engine.student.base import Student


@dataclass(frozen=True)
class TaskSpec:
    name: str
    #: "module:function" turning a loaded `engine.data.Source` into this task's clean rows
    #: (`engine.data.Rows`)
    rows: str
    #: "module:Class" of the student for each student.tuning the task supports; "full" (every
    #: weight trained) first
    students: Mapping[str, str] = field(hash=False)
    #: metric ids the student reports; the first ranks prefixes unless student.metric says otherwise
    metrics: tuple[str, ...]
    #: how the prefix is placed, for the TA system prompt; {head}/{mid}/{tail} are the special
    #: tokens the model's tokenizer puts before, between and after the segments
    placement: str
    #: what one row of TaskData looks like (for docs and error messages)
    row_schema: str
    #: metrics computed only on the final test split unless chosen as the ranking metric
    test_only: tuple[str, ...] = ()
    #: default student model when student.model is left at the encoder default
    default_model: str = ""

    @property
    def default_metric(self) -> str:
        return self.metrics[0]

    def placement_for(self, head: str = "[CLS]", mid: str = "[SEP]", tail: str = "[SEP]") -> str:
        """The placement with the student's own special tokens (BERT's by default)."""
        return " ".join(self.placement.format(head=head, mid=mid, tail=tail).split())


TASKS: dict[str, TaskSpec] = {
    "classification": TaskSpec(
        name="classification",
        rows="engine.data:build_classification_rows",
        students={
            "full": "engine.student.classification:ClassificationStudent",
            # frozen encoder: L-Tuning, or peft prefix / prompt tuning
            "lt-prefix": "engine.student.ltuning:LTuningStudent",
            "lt-prompt": "engine.student.ltuning:LTuningStudent",
            "prefix": "engine.student.soft_prompt:SoftPromptStudent",
            "prompt": "engine.student.soft_prompt:SoftPromptStudent",
        },
        metrics=("accuracy", "macro_f1"),
        placement="{head}prefix + context",
        row_schema='{"text": str, "label": int}',
    ),
    "extractive_qa": TaskSpec(
        name="extractive_qa",
        rows="engine.data_tasks:build_qa_rows",
        students={"full": "engine.student.qa:QAStudent"},
        metrics=("f1", "exact_match"),
        placement="{head} prefix + question {mid} context {tail}",
        row_schema='{"id": str, "question": str, "context": str, '
                   '"answers": {"text": [str], "answer_start": [int]}}',
    ),
    "multiple_choice": TaskSpec(
        name="multiple_choice",
        rows="engine.data_tasks:build_multiple_choice_rows",
        students={"full": "engine.student.multiple_choice:MultipleChoiceStudent"},
        metrics=("accuracy",),
        placement="{head} prefix + article {mid} question + option {tail} (once per option)",
        row_schema='{"article": str, "question": str, "options": [str], "label": int}',
    ),
    "summarization": TaskSpec(
        name="summarization",
        rows="engine.data_tasks:build_summarization_rows",
        students={"full": "engine.student.seq2seq:Seq2SeqStudent"},
        metrics=("neg_loss", "rouge1", "rouge2", "rougeL"),
        placement="{head} prefix + document {tail}",
        row_schema='{"document": str, "summary": str}',
        test_only=("rouge1", "rouge2", "rougeL"),
        default_model="facebook/bart-base",
    ),
}


#: every student.tuning some task supports, in registry order ("full" first)
TUNINGS: tuple[str, ...] = tuple(dict.fromkeys(t for spec in TASKS.values() for t in spec.students))
#: every metric id some task reports, in registry order
METRICS: tuple[str, ...] = tuple(dict.fromkeys(m for spec in TASKS.values() for m in spec.metrics))


def _resolve(qualified: str) -> Any:
    """The object named "module:name", imported."""
    module, _, name = qualified.partition(":")
    return getattr(importlib.import_module(module), name)


def get_task(task: str) -> TaskSpec:
    """The spec of `task`; ConfigError naming the known tasks otherwise."""
    spec = TASKS.get(task)
    if spec is None:
        raise ConfigError(f"invalid value {task!r} for data.task", f"use one of {', '.join(TASKS)}")
    return spec


def default_metric(task: str) -> str:
    """The metric that ranks prefixes for `task` when student.metric is not set."""
    return get_task(task).default_metric


def task_metrics(task: str) -> tuple[str, ...]:
    """Every metric id `task` accepts as student.metric."""
    return get_task(task).metrics


def check_metric(task: str, metric: str) -> None:
    """ConfigError unless `metric` can rank prefixes for `task`."""
    allowed = task_metrics(task)
    if metric not in allowed:
        raise ConfigError(f"student.metric {metric!r} does not apply to task {task!r}",
                          f"use one of {', '.join(allowed)} (or leave it unset for {allowed[0]})")


def student_class(task: str, tuning: str = "full") -> "type[Student]":
    """Import and return the Student implementation of `task` trained with `tuning`;
    ConfigError if the task has no student for that tuning."""
    spec = get_task(task)
    student = spec.students.get(tuning)
    if student is None:
        serving = [name for name, other in TASKS.items() if tuning in other.students]
        raise ConfigError(f"student.tuning {tuning!r} works only for {', '.join(serving)}"
                          if serving else f"invalid value {tuning!r} for student.tuning",
                          'use tuning = "full" for this task')
    return _resolve(student)


def row_builder(task: str) -> Callable[..., Any]:
    """Import and return the row builder of `task` (`engine.data.RowBuilder`); DataError
    naming the known tasks otherwise."""
    spec = TASKS.get(task)
    if spec is None:
        raise DataError(f"task {task!r} is not supported",
                        f"set data.task to one of: {', '.join(TASKS)}")
    return _resolve(spec.rows)


def metric_order(task: str, metric: str) -> tuple[str, ...]:
    """The task's metrics with the ranking metric first (a Student's `metric_names`)."""
    check_metric(task, metric)
    return (metric, *(m for m in task_metrics(task) if m != metric))


def format_exemplar(task: str, row: dict, label_names: list[str] | None = None) -> tuple[str, str]:
    """(text, label) of one training row, as a TA prompt shows an exemplar in GPTA-Data mode."""
    if task == "extractive_qa":
        answers = [a for a in (row.get("answers") or {}).get("text", []) if a]
        return (f"Question: {row.get('question', '')} Context: {row.get('context', '')}",
                answers[0] if answers else "(no answer in the context)")
    if task == "multiple_choice":
        options = list(row.get("options") or [])
        listed = " ".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options))
        label = row.get("label")
        answer = (f"({chr(65 + label)}) {options[label]}"
                  if isinstance(label, int) and 0 <= label < len(options) else str(label))
        return (f"Article: {row.get('article', '')} Question: {row.get('question', '')} "
                f"Options: {listed}", answer)
    if task == "summarization":
        return row.get("document", ""), row.get("summary", "")
    label = row.get("label", "")
    if label_names and isinstance(label, int) and 0 <= label < len(label_names):
        label = label_names[label]
    return str(row.get("text", "")), str(label)
