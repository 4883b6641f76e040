# A monthly budget on the project with e-mail alerts at 90, 100 and 120 % of actual spend (and
# at 100 % of the forecast). The default budget sits above what the cluster costs at rest
# (docs/capacity.md, "Default sizes"), so a normal month sends nothing and a T4 node pool left
# scaled up, or training runs piling up, is noticed.
resource "google_monitoring_notification_channel" "budget_email" {
  display_name = "ppd budget alerts"
  type         = "email"
  labels = {
    email_address = var.budget_alert_email
  }
  depends_on = [google_project_service.enabled]
}

resource "google_billing_budget" "ppd" {
  billing_account = var.billing_account_id
  display_name    = "ppd monthly budget"

  budget_filter {
    projects = ["projects/${data.google_project.this.number}"]
  }

  amount {
    specified_amount {
      units = tostring(var.budget_amount)
    }
  }

  threshold_rules {
    threshold_percent = 0.9
  }
  threshold_rules {
    threshold_percent = 1.0
  }
  threshold_rules {
    threshold_percent = 1.2
  }
  threshold_rules {
    threshold_percent = 1.0
    spend_basis       = "FORECASTED_SPEND"
  }

  all_updates_rule {
    monitoring_notification_channels = [google_monitoring_notification_channel.budget_email.id]
    disable_default_iam_recipients   = false # billing admins get the e-mails too
  }
}
