from django.apps import AppConfig


class TasksDemoConfig(AppConfig):
    name = "examples.tasks_demo"
    label = "tasks_demo"
    verbose_name = "Tasks API example"
