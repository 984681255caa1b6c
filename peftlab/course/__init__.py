"""The course's plumbing: where its data lives (:mod:`~peftlab.course.data`), the bundled base model
(:mod:`~peftlab.course.model`), the tasks and held-out stories (:mod:`~peftlab.course.tasks`), the
training loop and exact-match evaluation (:mod:`~peftlab.course.train`) and side-by-side timing
(:mod:`~peftlab.course.measure`). It knows nothing of any PEFT method: whatever a method made
trainable, ``train`` trains."""
