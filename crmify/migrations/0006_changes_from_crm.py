# Changes from the CRM (issue 14): where a poll has read up to, the CRM-side delete and modification time of a lead, and the ledger's direction and "conflict".

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("crmify", "0005_funnel_and_delivery"),
    ]

    operations = [
        migrations.CreateModel(
            name="PullCursor",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=255, unique=True, verbose_name="CRM")),
                (
                    "watermark",
                    models.DateTimeField(blank=True, null=True, verbose_name="read up to"),
                ),
                (
                    "last_started_at",
                    models.DateTimeField(blank=True, null=True, verbose_name="last poll started"),
                ),
                (
                    "last_finished_at",
                    models.DateTimeField(blank=True, null=True, verbose_name="last poll finished"),
                ),
                (
                    "last_calls",
                    models.PositiveIntegerField(default=0, verbose_name="calls in the last poll"),
                ),
                (
                    "last_changes",
                    models.PositiveIntegerField(default=0, verbose_name="changes in the last poll"),
                ),
                ("last_error", models.TextField(blank=True, default="", verbose_name="last error")),
                (
                    "deletes_scanned_at",
                    models.DateTimeField(
                        blank=True, null=True, verbose_name="last scan for deletes"
                    ),
                ),
                ("updated_at", models.DateTimeField(auto_now=True, verbose_name="updated")),
            ],
            options={
                "verbose_name": "pull cursor",
                "verbose_name_plural": "pull cursors",
            },
        ),
        migrations.AddField(
            model_name="lead",
            name="crm_modified_at",
            field=models.DateTimeField(
                blank=True, editable=False, null=True, verbose_name="changed in the CRM"
            ),
        ),
        migrations.AddField(
            model_name="lead",
            name="deleted_in_crm_at",
            field=models.DateTimeField(
                blank=True, editable=False, null=True, verbose_name="deleted in the CRM"
            ),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="direction",
            field=models.CharField(
                choices=[("out", "To the CRM"), ("in", "From the CRM")],
                default="out",
                max_length=3,
                verbose_name="direction",
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("ok", "OK"),
                    ("transient", "Transient error"),
                    ("permanent", "Permanent error"),
                    ("refused", "Refused, not sent"),
                    ("conflict", "Conflict, resolved"),
                ],
                max_length=16,
                verbose_name="outcome",
            ),
        ),
    ]
