"""The machinery benchmark types share: answer generation (``generation``), LLM judges (``judges``) and their
judgment cache (``cache``), bootstrap statistics (``stats``), judge calibration against published judgments
(``calibration``, ``calibration_sources``) and the job that scores a run's exams with the model loaded once
(``exams``). Each benchmark type's protocol and scoring live in one module of ``sftlab.benchmarks``."""
