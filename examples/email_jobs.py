"""The brief's email job, as the module a project would have (see docs/testing.md)."""

from __future__ import annotations

from shigoto import App, JobContext


class EmailService:
    def send(self, *, user_id: str, template_id: str) -> None:
        raise RuntimeError("no mail server in this example; tests replace this method")


email_service = EmailService()

app = App()


@app.job(queue="email", attempts=3)
async def send_email(ctx: JobContext, user_id: str, template_id: str) -> dict[str, str]:
    email_service.send(user_id=user_id, template_id=template_id)
    return {"user_id": user_id, "template_id": template_id, "status": "sent"}
